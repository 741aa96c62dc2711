"""Per-epoch fine-tuning checkpoints without pickle: safetensors for tensors, JSON for everything else.

Layout of ``checkpoint_dir``::

    epoch-0003/model.safetensors        model state_dict (head included)
    epoch-0003/optimizer.safetensors    optimizer state tensors, keyed "<param index>.<name>"
    epoch-0003/rng-rank<r>.safetensors  RNG states of rank r (torch CPU / CUDA, numpy, loader generators); python
                                        ``random`` state in its metadata
    epoch-0003/state.json               epoch, step, history, config, optimizer / scaler scalars, best epoch
    latest.json                         {"dir": "epoch-0003"}, replaced atomically once the epoch dir is complete

Only the latest epoch dir and the one holding the best weights (early stopping) are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pyrobust.features.store import atomic_write_json, read_json
from pyrobust.lpft.distributed import barrier, rank_world

LATEST = "latest.json"


def state_tensors(state: dict) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights)
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for idx, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{name}"] = v.detach().to("cpu").clone().contiguous()
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, scalars


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, scalars: dict) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(scalars.items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _rng_state(generators: dict) -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    for name, g in generators.items():
        tensors[f"gen.{name}"] = g.get_state()
    meta = {"python": json.dumps(random.getstate()),
            "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)])}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict, generators: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    for name, g in generators.items():
        if f"gen.{name}" in tensors:
            g.set_state(tensors[f"gen.{name}"])


def save_checkpoint(directory: str, *, epoch: int, model: torch.nn.Module, optimizer, scaler, state: dict,
                    generators: dict, best_dir: str | None) -> str:
    """Write epoch ``epoch`` (all ranks call; rank 0 writes the shared files). Returns the epoch dir name."""
    rank, _ = rank_world()
    name = f"epoch-{epoch:04d}"
    path = os.path.join(directory, name)
    if rank == 0:
        if os.path.isdir(path):  # left over from an interrupted attempt at this epoch
            shutil.rmtree(path)
        os.makedirs(path)
    barrier()
    rng, meta = _rng_state(generators)
    save_file(rng, os.path.join(path, f"rng-rank{rank}.safetensors"), metadata=meta)
    if rank == 0:
        save_file(state_tensors(model.state_dict()), os.path.join(path, "model.safetensors"))
        opt_tensors, opt_scalars = _split_optimizer(optimizer)
        save_file(opt_tensors, os.path.join(path, "optimizer.safetensors"))
        full = dict(state, epoch=epoch, optimizer_scalars=opt_scalars,
                    scaler=scaler.state_dict() if scaler is not None else None)
        atomic_write_json(os.path.join(path, "state.json"), full)
    barrier()
    if rank == 0:
        atomic_write_json(os.path.join(directory, LATEST), {"dir": name})
        keep = {name, best_dir}
        for entry in os.listdir(directory):
            if entry.startswith("epoch-") and entry not in keep:
                shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    barrier()
    return name


def load_checkpoint(directory: str, *, model, optimizer, scaler, generators: dict) -> dict | None:
    """Restore the latest checkpoint into ``model``/``optimizer``/``scaler``/RNGs; returns its state dict or None."""
    latest = read_json(os.path.join(directory, LATEST))
    if latest is None:
        return None
    rank, _ = rank_world()
    path = os.path.join(directory, latest["dir"])
    state = read_json(os.path.join(path, "state.json"))
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    _load_optimizer(optimizer, load_file(os.path.join(path, "optimizer.safetensors")), state["optimizer_scalars"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng_file = os.path.join(path, f"rng-rank{rank}.safetensors")
    from safetensors import safe_open

    with safe_open(rng_file, framework="pt") as f:
        meta = f.metadata()
    _set_rng_state(load_file(rng_file), meta, generators)
    state["dir"] = latest["dir"]
    return state


def load_model_state(directory: str, name: str) -> dict:
    return load_file(os.path.join(directory, name, "model.safetensors"))
