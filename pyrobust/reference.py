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
    if fill is not None and images.dtype == torch.uint8:
        fill = min(max(fill, 0.0), 255.0)  # saturated to the dtype's range before blending
    other = torch.full_like(x, fill) if fill is not None else x[partner.long()]
    out = g * x + (1 - g) * other
    if images.dtype == torch.uint8:
        return torch.floor(out.clamp(0, 255) + 0.5).to(torch.uint8)
    return out.to(images.dtype)


def mix_pairs(images: torch.Tensor, params: torch.Tensor, modes: torch.Tensor,
              invert: torch.Tensor) -> torch.Tensor:
    """``mix_pairs_`` out of place: for ``i < N // 2`` and ``j = N - 1 - i``, ``out[k] = G_k x[k] +
    (1 - G_k) x[N - 1 - k]`` for k in (i, j), from the originals, with sample k's mask in mode
    ``("gaussian", "trapezoid", "constant")[modes[k]]``, inverted where ``invert[k]``; samples with
    ``modes[k] = -1`` and an odd batch's middle one unchanged."""
    n = images.shape[0]
    out = images.clone()
    flip = torch.arange(n - 1, -1, -1)
    for k in range(n):
        if int(modes[k]) < 0 or int(flip[k]) == k:
            continue
        mode = ("gaussian", "trapezoid", "constant")[int(modes[k])]
        out[k] = mix(images, flip, params, mode, bool(invert[k]))[k]
    return out


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


# --- probe references ---
# Plain float64 versions of the probe objective (scikit-learn's LogisticRegression, L2, lbfgs)
# and of the fused kernels, for tests and benchmarks.


def probe_objective(X, y, coef, intercept, C: float, sample_weight=None):
    """scikit-learn's objective at a raw-feature head, float64:
    ``sum_n w_n loss_n / sum w + |coef|^2 / (2 C sum w)``; binomial when ``coef`` is ``(1, D)``.

    ``X`` (N, D), ``y`` (N,) class codes (0..K-1; {0, 1} for binomial), ``coef`` (K, D) or
    (1, D), ``intercept`` (K,) or (1,). Returns ``(objective, grad_coef, grad_intercept)`` with
    the gradient of the objective, as float64 tensors.
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.int64)
    W = torch.as_tensor(coef, dtype=torch.float64).clone().requires_grad_(True)
    b = torch.as_tensor(intercept, dtype=torch.float64).clone().requires_grad_(True)
    w = (torch.ones(len(y), dtype=torch.float64) if sample_weight is None
         else torch.as_tensor(sample_weight, dtype=torch.float64))
    z = X @ W.T + b
    if W.shape[0] == 1:
        loss = torch.nn.functional.softplus(z[:, 0]) - y.double() * z[:, 0]
    else:
        loss = torch.logsumexp(z, 1) - z.gather(1, y[:, None])[:, 0]
    f = (w * loss).sum() / w.sum() + (W * W).sum() / (2 * C * w.sum())
    gW, gb = torch.autograd.grad(f, (W, b))
    return f.detach(), gW, gb


def probe_loss_grad(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
    """Reference of ``torch.ops.pyrobust.probe_loss_grad`` (float64): logits (N, m, K)."""
    z = logits.double()
    w = weight.double()[:, None]
    if z.shape[2] == 1:
        p = torch.sigmoid(z[..., 0])
        yb = target.double()[:, None]
        loss = torch.nn.functional.softplus(z[..., 0]) - yb * z[..., 0]
        grad = (w * (p - yb))[..., None]
        curv = p * (1 - p)
    else:
        p = torch.softmax(z, 2)
        onehot = torch.nn.functional.one_hot(target, z.shape[2]).double()[:, None, :]
        loss = torch.logsumexp(z, 2) - (z * onehot).sum(2)
        grad = w[..., None] * (p - onehot)
        curv = (1 - (p * p).sum(2)) / (z.shape[2] - 1)
    stats = torch.stack([(w * loss).sum(0), (w * curv).sum(0)], 1)
    return grad, stats


def probe_line_stats(logits, direction, target, weight, step):
    """Reference of ``torch.ops.pyrobust.probe_line_stats`` by autograd in ``t`` (float64): the
    weighted loss sum, its first two derivatives in ``t``, its change from ``t = 0`` and the sum of
    the rows' absolute changes."""
    def losses(c, t):
        z = logits[:, c:c + 1].double() + t * direction[:, c:c + 1].double()
        if z.shape[2] == 1:
            return torch.nn.functional.softplus(z[:, 0, 0]) - target.double() * z[:, 0, 0]
        return torch.logsumexp(z[:, 0], 1) - z[:, 0].gather(1, target[:, None])[:, 0]

    out = []
    w = weight.double()
    for c in range(logits.shape[1]):
        t = torch.tensor(float(step[c]), dtype=torch.float64, requires_grad=True)
        loss = losses(c, t)
        f = (w * loss).sum()
        (d1,) = torch.autograd.grad(f, t, create_graph=True)
        (d2,) = torch.autograd.grad(d1, t)
        change = w * (loss.detach() - losses(c, 0.0))
        out.append(torch.stack([f.detach(), d1.detach(), d2.detach(), change.sum(),
                                change.abs().sum()]))
    return torch.stack(out)
