"""``extract_features``: one pass of a frozen backbone over a dataset, into a resumable on-disk cache."""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torch.utils.data._utils.collate import default_collate

from pyrobust.checks import check_bool, check_int
from pyrobust.errors import resolve_device
from pyrobust.features import store
from pyrobust.features._dist import barrier, rank_world
from pyrobust.features.fingerprint import dataset_fingerprint, transform_repr, weights_fingerprint
from pyrobust.models.adapter import model_input

_DTYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


class _StopForward(Exception):
    """Raised by the layer hook: nothing after the requested layer needs computing."""


def pool_to_vector(out: torch.Tensor, where: str = "output") -> torch.Tensor:
    """``(N, D)`` kept; ``(N, C, H, W)`` averaged over H, W; ``(N, T, C)`` averaged over tokens."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{where} must be a tensor, got {type(out).__name__}")
    if out.dim() == 2:
        return out
    if out.dim() == 4:
        return out.mean(dim=(2, 3))
    if out.dim() == 3:
        return out.mean(dim=1)
    raise ValueError(f"{where} has shape {tuple(out.shape)}; expected 2-D (N, D), 3-D (N, T, C) or 4-D (N, C, H, W)")


def _feature_fn(model: nn.Module, layer: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable]:
    """Return (fn(x) -> (N, D) tensor, cleanup)."""
    if layer is None:
        feats = getattr(model, "features", None)
        if callable(feats) and not isinstance(feats, nn.Module):
            return (lambda x: pool_to_vector(feats(x), "model.features(x)")), (lambda: None)
        return (lambda x: pool_to_vector(model(x), "model(x)")), (lambda: None)
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n][:20]
        raise ValueError(f"layer={layer!r} is not a module of the model; some names: {names}")
    captured: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        captured.append(out)
        raise _StopForward

    handle = modules[layer].register_forward_hook(hook)

    def fn(x):
        captured.clear()
        try:
            model(x)
        except _StopForward:
            pass
        if not captured:
            raise ValueError(f"layer={layer!r} was not called during the forward pass")
        return pool_to_vector(captured[0], f"output of layer {layer!r}")

    return fn, handle.remove


def _resolve_input(data, batch_size, num_workers):
    if isinstance(data, DataLoader):
        sampler = data.batch_sampler.sampler if data.batch_sampler is not None else data.sampler
        if not isinstance(sampler, SequentialSampler):
            raise ValueError(
                f"extract_features needs rows in dataset order, but the DataLoader uses {type(sampler).__name__}; "
                "pass the Dataset or a DataLoader with shuffle=False"
            )
        return (data.dataset, batch_size or data.batch_size or 256,
                data.num_workers if num_workers is None else num_workers, data.collate_fn)
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(f"dataset must be a torch Dataset or DataLoader, got {type(data).__name__}")
    return data, batch_size or 256, num_workers or 0, default_collate


def _split_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"dataset items must be (image, label) pairs, got a batch of type {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be one integer per item, got a batch of shape {tuple(labels.shape)}")
    return images, labels


def extract_features(
    model: nn.Module,
    dataset,
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float16,
    verify: bool = True,
    progress: bool = True,
    channels_last: bool = True,
) -> store.FeatureCache:
    """Run the frozen ``model`` once over ``dataset`` and store features and labels under ``path``.

    Args:
        model: the backbone, run in eval mode without gradients (autocast float16 on CUDA). It is moved to
            ``device``; its train/eval mode is restored afterwards.
        dataset: a map-style Dataset yielding ``(image, int label)`` or a DataLoader over one with a sequential
            sampler (its batch size, workers and collate_fn are used).
        path: cache directory (created if missing).
        layer: name of a module (``model.named_modules()``) whose output is taken, pooled to ``(N, D)``
            (4-D: mean over H, W; 3-D: mean over tokens). Default: ``model.features(x)`` if the model has such a
            method, else ``model(x)``.
        batch_size: rows per chunk (default: the DataLoader's, else 256). A resumed cache keeps its first chunk size.
        num_workers: DataLoader workers (default: the DataLoader's, else 0).
        device: default CUDA when available.
        dtype: storage dtype, float16 (default), float32 or float64.
        verify: check chunk checksums of existing data; chunks that fail are recomputed with a ``RuntimeWarning``
            (``FeatureCache.open`` on its own raises instead, since it has no model to recompute with).
        progress: tqdm bar on rank 0.
        channels_last: feed 4-D batches in channels-last layout (``pyrobust.models.model_input``: faster
            convolutions; features equal to round-off); set False for a model that ``.view``s its 4-D input.

    Returns:
        :class:`FeatureCache` with ``.features`` an ``(N, D)`` ``np.memmap`` of ``dtype`` and ``.labels`` ``(N,)``
        int64.

    Raises:
        CacheKeyMismatch: ``path`` holds features of another model / dataset / transform / layer / dtype.
        ValueError: empty dataset, non-integer labels, non-finite features (e.g. float16 overflow), inconsistent
            feature dims, unknown layer.

    The same call on a finished cache loads it without running the model. An interrupted call (exception, kill)
    leaves completed chunks on disk; the next call computes only the missing ones, and the result equals an
    uninterrupted run. Under ``torch.distributed`` rank ``r`` computes chunks ``r, r + world, ...`` into the same
    files (which must be on a filesystem every rank sees) and rank 0 finalises the manifest.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(dtype, torch.dtype) or dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not path.strip():
        raise ValueError("path must be a directory path, got ''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path!r} exists and is not a directory")
    if batch_size is not None:
        check_int(batch_size, "batch_size", min=1)
    if num_workers is not None:
        check_int(num_workers, "num_workers", min=0)
    verify, progress = check_bool(verify, "verify"), check_bool(progress, "progress")
    channels_last = check_bool(channels_last, "channels_last")
    ds, chunk_size, num_workers, collate_fn = _resolve_input(dataset, batch_size, num_workers)
    if int(chunk_size) <= 0:
        raise ValueError(f"batch_size must be positive, got {chunk_size}")
    n = len(ds)
    if n == 0:
        raise ValueError("dataset is empty: nothing to extract")
    device = resolve_device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device}")
    rank, world = rank_world()

    was_training = model.training
    model.eval()
    model.to(device)
    layer_fn, cleanup = _feature_fn(model, layer)

    def fn(images):
        return layer_fn(model_input(images, device, channels_last))

    try:
        key = {
            "format_version": store.FORMAT_VERSION,
            "weights": weights_fingerprint(model),
            "dataset_len": n,
            "dataset_sample": dataset_fingerprint(ds),
            "transform": transform_repr(ds),
            "layer": layer,
            "dtype": _DTYPES[dtype],
        }
        return _extract(model, fn, ds, path, key, int(chunk_size), num_workers, collate_fn, device, dtype,
                        verify, progress, rank, world)
    finally:
        cleanup()
        model.train(was_training)


def _forward(fn, images, device, dtype):
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), amp:
        out = fn(images)
    return out.to(dtype)


def _extract(model, fn, ds, path, key, chunk_size, num_workers, collate_fn, device, dtype, verify, progress,
             rank, world) -> store.FeatureCache:
    manifest_path = os.path.join(path, store.MANIFEST_FILE)
    key_path = os.path.join(path, store.KEY_FILE)
    n = key["dataset_len"]

    manifest = store.read_json(manifest_path)
    barrier()  # every rank has looked at the manifest before anyone may remove it
    if manifest is not None:
        store.check_key(path, manifest, key)
        if not verify:
            return store.FeatureCache.open(path, verify=False)
        try:  # a manifest that cannot vouch for every chunk is not trusted: its chunks are rechecked
            store.check_layout(manifest_path, manifest, checksums=True)
            feats, labels = store.open_arrays(path, manifest, "r")
            bad = store.bad_chunks(feats, labels, dict(enumerate(manifest["checksums"])),
                                   int(manifest["chunk_size"]))
            del feats, labels
            why = f"chunk(s) {bad[:10]} fail their checksum"
        except store.CacheCorrupted as exc:
            bad, why = ["all"], str(exc).split(";")[0]
        if not bad:
            return store.FeatureCache(path, manifest, *store.open_arrays(path, manifest, "r"))
        if rank == 0:
            warnings.warn(f"feature cache at {path!r}: {why}; recomputing them", RuntimeWarning, stacklevel=3)
            os.remove(manifest_path)
        barrier()

    layout = store.read_json(key_path)
    if layout is not None:
        store.check_key(path, layout, key)
        store.check_layout(key_path, layout, checksums=False)
    elif rank == 0:
        os.makedirs(path, exist_ok=True)
        dim = getattr(model, "feature_dim", None) if key["layer"] is None else None
        if not isinstance(dim, int) or dim <= 0:  # no declared width: one forward pass on one item finds it
            first_images, _ = _split_batch(collate_fn([ds[0]]))
            dim = int(_forward(fn, first_images, device, dtype).shape[1])
        store.create_arrays(path, n, dim, key["dtype"])
        layout = dict(key, n=n, dim=dim, chunk_size=chunk_size)
        store.atomic_write_json(key_path, layout)  # last: its presence means the arrays are allocated
    barrier()
    if layout is None:
        layout = store.read_json(key_path)
    chunk_size, dim = int(layout["chunk_size"]), int(layout["dim"])
    n_chunks = -(-n // chunk_size)

    feats, labels = store.open_arrays(path, layout, "r+")
    recorded = store.read_progress(path)
    mine_recorded = [c for c in recorded if c % world == rank and c < n_chunks]
    bad = set(store.bad_chunks(feats, labels, recorded, chunk_size, mine_recorded)) if verify else set()
    todo = [c for c in range(rank, n_chunks, world) if c not in recorded or c in bad]

    if todo:
        loader = DataLoader(ds, batch_sampler=[range(*store.chunk_bounds(c, chunk_size, n)) for c in todo],
                            num_workers=num_workers, collate_fn=collate_fn, pin_memory=device.type == "cuda")
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(range(rank, n_chunks, world)), initial=len(range(rank, n_chunks, world)) - len(todo),
                       desc="extract features", unit="chunk")
        with open(os.path.join(path, f"progress-rank{rank}.jsonl"), "a") as log:
            for c, batch in zip(todo, loader):
                a, b = store.chunk_bounds(c, chunk_size, n)
                images, y = _split_batch(batch)
                out = _forward(fn, images, device, dtype)
                if out.shape != (b - a, dim):
                    raise ValueError(f"features of rows {a}..{b - 1} have shape {tuple(out.shape)}, "
                                     f"expected ({b - a}, {dim})")
                if not bool(torch.isfinite(out).all()):
                    raise ValueError(f"backbone returned non-finite features (in {key['dtype']}) for rows "
                                     f"{a}..{b - 1}; check the model or store in float32")
                f_np = out.cpu().numpy()
                y_np = y.numpy().astype(np.int64, copy=False)
                feats[a:b] = f_np
                labels[a:b] = y_np
                # the checksum is taken from what was meant to be written, so a bad write is caught later
                log.write(f'{{"chunk": {c}, "checksum": "{store.chunk_checksum(f_np, y_np)}"}}\n')
                log.flush()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        feats.flush()
        labels.flush()
    del feats, labels
    barrier()

    if rank == 0:
        recorded = store.read_progress(path)
        missing = [c for c in range(n_chunks) if c not in recorded]
        if missing:
            raise RuntimeError(f"feature cache at {path!r}: chunks {missing[:10]} were not written by any rank")
        manifest = dict(layout, checksums=[recorded[c] for c in range(n_chunks)])
        store.atomic_write_json(manifest_path, manifest)
    barrier()
    manifest = store.read_json(manifest_path)
    return store.FeatureCache(path, manifest, *store.open_arrays(path, manifest, "r"))
