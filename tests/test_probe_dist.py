"""probe_sweep over a gloo group of 2 CPU processes (127.0.0.1) against one process on all rows."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests import probe_dist_helpers as helpers
from tests.conftest import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
WORLD = 2


def _run_ranks(args, timeout=240, ok=True):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, *args(r)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for r in range(WORLD)]
    try:
        outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all((p.returncode == 0) == ok for p in procs), "\n".join(o[-3000:] for o in outs)
    return outs


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_dist")
    port = free_port()
    _run_ranks(lambda r: [os.path.join(HERE, "probe_dist_helpers.py"), str(out), str(r), str(WORLD),
                          str(port)])
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(WORLD)]


@pytest.mark.parametrize("case", sorted(helpers.CASES))
def test_two_ranks_match_one_process(ranks, case):
    import torch

    torch.set_num_threads(1)
    single = helpers.flat(helpers.sweep(case))
    for key, value in single.items():
        for r in range(1, WORLD):  # every rank returns the same result, bit for bit
            np.testing.assert_array_equal(ranks[r][f"{case}.{key}"], ranks[0][f"{case}.{key}"],
                                          err_msg=f"{case}.{key}: rank {r} differs from rank 0")
    dist = {k[len(case) + 1:]: v for k, v in ranks[0].items() if k.startswith(case + ".")}
    np.testing.assert_array_equal(dist["classes"], single["classes"])
    assert float(dist["best_C"]) == float(single["best_C"])
    np.testing.assert_allclose(dist["val_accuracy"], single["val_accuracy"], atol=1e-3)
    np.testing.assert_allclose(dist["val_loss"], single["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(dist["train_loss"], single["train_loss"], rtol=1e-5)
    for i in range(len(helpers.CS)):  # coefficients within 1e-3 of the largest, per C
        for key in ("coefs", "intercepts"):
            scale = np.abs(single[key][i]).max()
            np.testing.assert_allclose(dist[key][i], single[key][i], rtol=0, atol=1e-3 * scale,
                                       err_msg=f"{case} {key} at C={helpers.CS[i]:g}")


def test_a_rank_with_bad_rows_fails_every_rank(tmp_path):
    # Rank 1's rows hold a NaN: rank 1 raises its own error, rank 0 one naming rank 1, and
    # neither waits in a collective for the other (the timeout would fail the test).
    port = free_port()
    outs = _run_ranks(lambda r: [os.path.join(HERE, "probe_dist_helpers.py"), str(tmp_path), str(r),
                                 str(WORLD), str(port), "--bad"], timeout=120, ok=False)
    assert "rank 1 raised: X holds NaN or inf" in outs[1], outs[1][-2000:]
    assert "rank 0 raised: another rank's input failed its checks" in outs[0], outs[0][-2000:]
    assert "rank 1: ValueError: X holds NaN or inf" in outs[0], outs[0][-2000:]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """A train cache of 90 rows in 12 chunks and a val cache of 40 rows, as `pyrobust extract`
    writes them."""
    import torch

    from pyrobust.features import extract_features
    from tests.lpft_helpers import Blobs, TinyCNN

    root = tmp_path_factory.mktemp("probe_caches")
    for name, data in (("train", Blobs(n=90)), ("val", Blobs(n=40, seed=1))):
        extract_features(TinyCNN(), data, str(root / name), batch_size=8, device="cpu",
                         dtype=torch.float32, progress=False)
    return root


def test_rank_shards_cover_the_cache_once(caches):
    from pyrobust.features import FeatureCache

    cache = FeatureCache.open(str(caches / "train"))
    shards = [cache.shard(r, WORLD) for r in range(WORLD)]
    assert cache.rank_chunks(1, WORLD) == [1, 3, 5, 7, 9, 11]
    rows = np.concatenate([s[2] for s in shards])
    assert sorted(rows.tolist()) == list(range(len(cache)))
    for X, y, r in shards:
        np.testing.assert_array_equal(X, cache.features[r])
        np.testing.assert_array_equal(y, cache.labels[r])
    with pytest.raises(ValueError, match="rank"):
        cache.rank_chunks(2, WORLD)


def _probe_command(argv):
    """The argv of rank r's `pyrobust probe ...`, in the environment torchrun gives it."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(WORLD)}
    code = ("import os, sys; os.environ.update({env!r}, RANK=sys.argv[1], LOCAL_RANK=sys.argv[1]); "
            "from pyrobust.cli import main; sys.exit(main({argv!r}))").format(env=env, argv=["probe", *argv])
    return lambda r: ["-c", code, str(r)]


@pytest.mark.parametrize("val", ["cache", "fraction"])
def test_probe_command_on_a_cache_under_two_ranks(caches, tmp_path, val):
    from safetensors.numpy import load_file

    from pyrobust.cli import main

    opts = ["--c-min", "-2", "--c-max", "1", "--n-c", "4", "--no-progress"]
    opts += ["--val-cache", str(caches / "val")] if val == "cache" else ["--val-fraction", "0.25"]
    single = tmp_path / "single"
    assert main(["probe", "--cache", str(caches / "train"), "--out", str(single), *opts]) == 0
    ranked = tmp_path / "ranked"
    outs = _run_ranks(_probe_command(["--cache", str(caches / "train"), "--out", str(ranked), *opts]))
    assert "best C" in outs[0] and "best C" not in outs[1]  # rank 0 reports and writes
    a, b = load_file(str(single / "probe_head.safetensors")), load_file(str(ranked / "probe_head.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-3 * np.abs(a[k]).max(), err_msg=k)


def test_probe_command_refuses_a_rank_without_rows_on_every_rank(caches, tmp_path):
    """The val cache has 5 chunks; 2 ranks and a 1-chunk cache leave rank 1 empty: both ranks
    fail with the reason instead of one waiting for the other."""
    import torch

    from pyrobust.features import extract_features
    from tests.lpft_helpers import Blobs, TinyCNN

    small = tmp_path / "small"
    extract_features(TinyCNN(), Blobs(n=8), str(small), batch_size=8, device="cpu", dtype=torch.float32,
                     progress=False)
    outs = _run_ranks(_probe_command(["--cache", str(caches / "train"), "--val-cache", str(small),
                                      "--out", str(tmp_path / "out"), "--no-progress"]), timeout=120, ok=False)
    for out in outs:
        assert "has no rows for rank 1 of 2" in out, out[-2000:]
