"""Distributed feature extraction and DDP fine-tuning (2 CPU processes, gloo, localhost) against one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from pyrobust.features import FeatureCache, extract_features
from pyrobust.lpft import finetune
from tests.conftest import free_port
from tests.lpft_helpers import Blobs, TinyCNN

HERE = os.path.dirname(os.path.abspath(__file__))
WORLD = 2


def test_two_ranks_match_one_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "lpft_helpers.py"), "ddp", str(tmp_path),
                               str(r), str(WORLD), str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
             for r in range(WORLD)]
    outs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)

    # extraction: rank r wrote chunks r, r + 2, ...; the finished store equals a single-process one
    shared = FeatureCache.open(str(tmp_path / "cache"))
    single = extract_features(TinyCNN(), Blobs(n=70), str(tmp_path / "single"), batch_size=8, device="cpu",
                              progress=False)
    np.testing.assert_array_equal(shared.features, single.features)
    np.testing.assert_array_equal(shared.labels, single.labels)
    assert sorted(os.listdir(tmp_path / "cache")).count("progress-rank1.jsonl") == 1

    # fine-tuning: per-rank batch 8 x 2 ranks == one process with batch 16 (BatchNorm in eval mode)
    torch.set_num_threads(1)
    model, hist = finetune(TinyCNN(), None, DataLoader(Blobs(n=64), batch_size=16),
                           DataLoader(Blobs(n=30, seed=1), batch_size=8), epochs=2, lr=0.05, device="cpu",
                           progress=False, seed=0)
    ddp = load_file(str(tmp_path / "weights.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5, msg=k)
    assert (tmp_path / "val.txt").read_text() == repr(hist["val_accuracy"])
    assert os.path.exists(tmp_path / "ckpt" / "latest.json")
