"""Slow, obviously-correct pure-PyTorch versions of pyrobust's kernels, for tests and benchmarks.

Everything here is written from the definitions in float64, with no attempt at speed: full
``(N, 1, H, W)`` masks are materialised, loops are plain. Kernels are judged against these.
"""

from __future__ import annotations

from typing import Optional

import torch

# --- mixing references ---


def _axis_profile(params: torch.Tensor, mode: str, axis: int, length: int) -> torch.Tensor:
    """The 1-D mask profile along x (axis 0) or y (axis 1): ``(N, length)`` float64."""
    p = params.to(torch.float64)
    u = torch.arange(length, dtype=torch.float64, device=p.device) + 0.5  # pixel centres
    if mode == "gaussian":
        c, s = p[:, axis : axis + 1], p[:, 2 + axis : 3 + axis]
        return torch.exp(-((u - c) ** 2) / (2 * s**2))
    if mode == "trapezoid":
        d = (u - p[:, axis : axis + 1]).abs()
        h, e = p[:, 2 + axis : 3 + axis], p[:, 4 + axis : 5 + axis]
        hard = (d < h).to(torch.float64)
        soft = ((h + e - d) / e.clamp_min(1e-300)).clamp(0, 1)
        return torch.where(e > 0, soft, hard)
    if mode == "constant":
        if axis == 0:
            return p[:, 0:1].expand(-1, length)
        return torch.ones(p.shape[0], length, dtype=torch.float64, device=p.device)
    raise ValueError(f"unknown mode {mode!r}")


def mix_mask(params: torch.Tensor, mode: str, invert: bool, height: int, width: int) -> torch.Tensor:
    """Masks ``G`` as ``(N, H, W)`` float64: ``gy(y) * gx(x)``, or one minus that when inverted."""
    gy = _axis_profile(params, mode, 1, height)
    gx = _axis_profile(params, mode, 0, width)
    g = gy[:, :, None] * gx[:, None, :]
    return 1 - g if invert else g


def mix(
    images: torch.Tensor,
    partner: torch.Tensor,
    params: torch.Tensor,
    mode: str,
    invert: bool = False,
    fill: Optional[float] = None,
) -> torch.Tensor:
    """``out[i] = G_i * images[i] + (1 - G_i) * other_i`` in float64, cast back like the kernel."""
    x = images.to(torch.float64)
    g = mix_mask(params, mode, invert, x.shape[2], x.shape[3])[:, None]
    other = torch.full_like(x, fill) if fill is not None else x[partner.long()]
    out = g * x + (1 - g) * other
    if images.dtype == torch.uint8:
        return torch.floor(out.clamp(0, 255) + 0.5).to(torch.uint8)
    return out.to(images.dtype)


def mixed_targets(
    labels: torch.Tensor,
    partner: torch.Tensor,
    lam: torch.Tensor,
    num_classes: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``lam_i * onehot(y_i) + (1 - lam_i) * onehot(y_partner(i))``, smoothed, float64."""
    eye = torch.eye(num_classes, dtype=torch.float64)
    eye = eye * (1 - label_smoothing) + label_smoothing / num_classes
    lam = lam.to(torch.float64)[:, None]
    return lam * eye[labels.long().cpu()] + (1 - lam) * eye[labels.long().cpu()[partner.long().cpu()]]
