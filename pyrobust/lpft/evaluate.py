"""Accuracy of a classifier on any number of named sets (ID val / test and OOD shifts)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from pyrobust.errors import resolve_device
from pyrobust.lpft.distributed import all_reduce_sum, sharded_eval_loader
from pyrobust.models.adapter import model_input


def autocast_for(device: torch.device, amp: bool):
    if not amp:
        return nullcontext()
    if device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device, got device={device}")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def split_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"loaders must yield (images, labels) batches, got {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    return images, labels


@torch.no_grad()
def correct_and_total(model: nn.Module, loader, device: torch.device, amp: bool = False,
                      channels_last: bool = True) -> torch.Tensor:
    """``tensor([correct, total])`` (float64) over one loader; ``model`` must already be in the wanted mode.
    ``channels_last``: feed 4-D batches in channels-last layout (``pyrobust.models.model_input``)."""
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        images, labels = split_batch(batch)
        images, labels = model_input(images, device, channels_last), labels.to(device, non_blocking=True)
        with autocast_for(device, amp):
            logits = model(images)
        counts[0] += (logits.argmax(dim=1) == labels).sum()
        counts[1] += labels.numel()
    return counts


def evaluate(model: nn.Module, loaders: dict, *, device=None, amp: bool | None = None,
             distributed: bool = False, channels_last: bool = True) -> dict[str, float]:
    """Top-1 accuracy (in [0, 1]) of ``model`` on each named loader.

    Args:
        model: maps ``(N, 3, H, W)`` float32 images to ``(N, K)`` logits; evaluated in eval mode, its mode restored.
        loaders: ``{name: iterable of (images, int64 labels)}``, e.g. ``{"id_test": ..., "ood_fog": ...}``.
        device: default: the model's device, else CUDA when available.
        amp: autocast on CUDA (default on when the device is CUDA).
        distributed: each rank evaluates a disjoint shard of each loader's dataset and counts are summed over ranks
            (every rank must call); default off, so rank 0 alone may call it.
        channels_last: feed 4-D batches in channels-last layout (faster convolutions; set False for a model
            that ``.view``s its 4-D input).
    """
    if not isinstance(loaders, dict):
        raise TypeError(f"loaders must be a dict of name -> loader, got {type(loaders).__name__}")
    device = resolve_device(device, model)
    amp = device.type == "cuda" if amp is None else bool(amp)
    was_training = model.training
    model.eval()
    model.to(device)
    out = {}
    try:
        for name, loader in loaders.items():
            if distributed:
                loader = sharded_eval_loader(loader)
            counts = correct_and_total(model, loader, device, amp, channels_last)
            if distributed:
                all_reduce_sum(counts)
            if counts[1] == 0:
                raise ValueError(f"loader {name!r} is empty")
            out[name] = float(counts[0] / counts[1])
    finally:
        model.train(was_training)
    return out
