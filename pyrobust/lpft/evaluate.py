"""Accuracy of a classifier on any number of named sets (ID val / test and OOD shifts)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from pyrobust.checks import check_bool
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
    """``(images, labels)`` of one batch: labels an integer tensor with one entry per image (shapes
    only are checked: no pass over the data)."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"loaders must yield (images, labels) batches, got {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    n = images.shape[0] if isinstance(images, torch.Tensor) and images.dim() else None
    if labels.dim() != 1 or (n is not None and labels.shape[0] != n):
        raise ValueError(f"labels must be one class index per image, shape ({n if n is not None else 'N'},), "
                         f"got shape {tuple(labels.shape)}")
    return images, labels


def check_label_range(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """ValueError when a label of a host tensor lies outside ``[0, num_classes)`` (a label the model
    cannot predict would count as wrong, or index outside the loss's row). One pass over the
    labels, on the CPU: no device sync."""
    if labels.numel():
        lo, hi = (int(v) for v in labels.aminmax())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{where}: labels should be class indices in [0, {num_classes}) for a model with "
                             f"{num_classes} outputs, got {lo if lo < 0 else hi}")


@torch.no_grad()
def correct_and_total(model: nn.Module, loader, device: torch.device, amp: bool = False,
                      channels_last: bool = True, name: str = "loader") -> torch.Tensor:
    """``tensor([correct, total])`` (float64) over one loader; ``model`` must already be in the wanted mode.
    ``channels_last``: feed 4-D batches in channels-last layout (``pyrobust.models.model_input``).

    Every label must be a class of the model, in ``[0, K)``: a ValueError naming the loader ``name``
    otherwise (checked once, after the loop: the extremes are kept on the device)."""
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    extremes = None  # (min, max) label, on the device
    k = None
    for batch in loader:
        images, labels = split_batch(batch)
        images, labels = model_input(images, device, channels_last), labels.to(device, non_blocking=True)
        with autocast_for(device, amp):
            logits = model(images)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: the model should give (N, K) logits for {labels.shape[0]} images, "
                             f"got shape {tuple(logits.shape)}")
        k = logits.shape[1]
        if labels.numel():
            lo, hi = labels.aminmax()
            extremes = (lo, hi) if extremes is None else (torch.minimum(extremes[0], lo),
                                                          torch.maximum(extremes[1], hi))
        counts[0] += (logits.argmax(dim=1) == labels).sum()
        counts[1] += labels.numel()
    if extremes is not None:
        lo, hi = int(extremes[0]), int(extremes[1])
        if lo < 0 or hi >= k:
            raise ValueError(f"{name}: labels should be class indices in [0, {k}) for a model with {k} outputs, "
                             f"got {lo if lo < 0 else hi}")
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
    amp = device.type == "cuda" if amp is None else check_bool(amp, "amp")
    distributed, channels_last = check_bool(distributed, "distributed"), check_bool(channels_last, "channels_last")
    was_training = model.training
    model.eval()
    model.to(device)
    out = {}
    try:
        for name, loader in loaders.items():
            if distributed:
                loader = sharded_eval_loader(loader)
            counts = correct_and_total(model, loader, device, amp, channels_last, name=f"loader {name!r}")
            if distributed:
                all_reduce_sum(counts)
            if counts[1] == 0:
                raise ValueError(f"loader {name!r} is empty")
            out[name] = float(counts[0] / counts[1])
    finally:
        model.train(was_training)
    return out
