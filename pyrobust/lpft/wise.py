"""WiSE-FT (Wortsman et al., 2022): interpolate pretrained and fine-tuned weights, θ(α) = (1 − α)·θ_pre + α·θ_ft.

Sweeping α traces an ID / OOD accuracy trade-off; the authors' default is α = 0.5 (REFERENCES.md §LP-FT).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from pyrobust.lpft.evaluate import evaluate


def interpolate(pretrained_state: dict, finetuned_state: dict, alpha: float) -> dict:
    """State dict with floating-point entries ``(1 − alpha)·pre + alpha·ft``.

    Non-floating entries (e.g. BatchNorm's int64 ``num_batches_tracked``) are taken from ``finetuned_state``.
    Computed in float32 (or float64) and cast back; ``alpha`` 0 and 1 return the endpoints exactly.

    Raises:
        ValueError: keys or shapes differ, or ``alpha`` is not a finite number in [0, 1].
    """
    if not isinstance(alpha, (int, float, np.floating, np.integer)) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    missing = sorted(set(finetuned_state) - set(pretrained_state))
    extra = sorted(set(pretrained_state) - set(finetuned_state))
    if missing or extra:
        raise ValueError(f"state dicts have different keys: only in finetuned {missing[:10]}, "
                         f"only in pretrained {extra[:10]}")
    out = {}
    for k, ft in finetuned_state.items():
        pre = pretrained_state[k]
        if not (isinstance(pre, torch.Tensor) and isinstance(ft, torch.Tensor)):
            raise TypeError(f"entry {k!r} should be a tensor in both state dicts, got {type(pre).__name__} and "
                            f"{type(ft).__name__}")
        if tuple(pre.shape) != tuple(ft.shape):
            raise ValueError(f"entry {k!r} has shape {tuple(pre.shape)} in pretrained and {tuple(ft.shape)} "
                             "in finetuned")
        if not ft.dtype.is_floating_point:
            out[k] = ft.clone()
            continue
        work = torch.float64 if ft.dtype == torch.float64 else torch.float32
        mixed = torch.lerp(pre.to(device=ft.device, dtype=work), ft.to(work), float(alpha))
        out[k] = mixed.to(ft.dtype)
    return out


def wise_sweep(model: nn.Module, pretrained_state: dict, finetuned_state: dict, loaders: dict,
               alphas=(0.0, 0.25, 0.5, 0.75, 1.0), *, device=None) -> list[dict]:
    """Accuracy on each loader for each α: ``[{"alpha": a, name: accuracy, ...}, ...]``.

    ``model`` only supplies the architecture: a copy is loaded with each interpolated state; ``model`` is unchanged.
    ``pretrained_state`` should hold the head the fine-tuning started from (the LP head for LP-FT).
    """
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
        raise TypeError(f"alphas must be a sequence of numbers in [0, 1], got {alphas!r}")
    alphas = list(alphas)
    for a in alphas:  # every alpha before the first evaluation
        if isinstance(a, bool) or not isinstance(a, (int, float, np.floating, np.integer)) or not math.isfinite(a) \
                or not 0.0 <= a <= 1.0:
            raise ValueError(f"alphas must hold numbers in [0, 1], got {a!r} in {alphas!r}")
    if not isinstance(loaders, dict):
        raise TypeError(f"loaders must be a dict of name -> loader, got {type(loaders).__name__}")
    work = copy.deepcopy(model)
    rows = []
    for a in alphas:
        work.load_state_dict(interpolate(pretrained_state, finetuned_state, a))
        rows.append({"alpha": float(a), **evaluate(work, loaders, device=device)})
    return rows
