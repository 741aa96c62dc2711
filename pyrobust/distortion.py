"""How much fine-tuning moved a network's features.

Kumar et al. (ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") explain LP-FT's OOD gains by *feature distortion*: fine-tuning with a fresh head
changes the penultimate features a lot, LP-FT barely at all (the authors report the mean squared change of
penultimate features, 10-1000x larger for FT; see ``REFERENCES.md`` section LP-FT). This module measures that
change on real networks and gives the paper's feature-extractor distance for the linear theory
(:mod:`pyrobust.theory`).

Matrix measures (inputs are numpy arrays or torch tensors of any float dtype; all arithmetic is float64 on
the CPU; every function returns a Python ``float``):

* :func:`mean_squared_change` -- the authors' measure, mean over samples of ``||f1 - f0||^2``.
* :func:`mean_cosine_change` -- mean over samples of ``1 - cos(f0, f1)``; blind to per-sample rescaling.
* :func:`procrustes_distance` -- shape distance after centring, unit-norm scaling and the best rotation.
* :func:`linear_cka` -- linear centred kernel alignment (Kornblith et al., ICML 2019).
* :func:`subspace_distance` -- the paper's ``d(B, B') = min_U ||B - U B'||_2`` over rotations ``U``.

:func:`feature_change` runs two models over the same batches and reports the first four per named set.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import torch

__all__ = [
    "feature_change",
    "linear_cka",
    "mean_cosine_change",
    "mean_squared_change",
    "procrustes_distance",
    "subspace_distance",
]


def _as_float64(x: Any, name: str, ndim: int = 2) -> np.ndarray:
    """``x`` (numpy array or torch tensor, any float dtype) as a float64 numpy array, validated."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (shape {tuple(x.shape)}, no values); give a CPU or CUDA tensor")
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a tensor of dtype {x.dtype}")
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got an array of dtype {x.dtype}")
        arr = x.astype(np.float64, copy=False)
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf) out of {arr.size}")
    return arr


def _paired(A: Any, B: Any, *, same_width: bool) -> tuple[np.ndarray, np.ndarray]:
    a = _as_float64(A, "A")
    b = _as_float64(B, "B")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"A and B must have the same number of rows (samples), got {a.shape[0]} and {b.shape[0]}"
        )
    if same_width and a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError(f"need at least 2 samples (rows), got {a.shape[0]}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"A and B need at least one column, got shapes {a.shape} and {b.shape}")
    return a, b


def _centre(x: np.ndarray, name: str) -> np.ndarray:
    """Column-centred ``x`` scaled to a largest entry of 1: the shape measures are scale-invariant, and
    scaling first keeps any finite magnitude (1e-300 or 1e300) away from underflow and overflow."""
    peak = float(np.abs(x).max())
    xc = x / peak if peak > 0 else x
    xc = xc - xc.mean(axis=0, keepdims=True)
    spread = float(np.abs(xc).max())
    # Relative to the matrix's own scale: a constant matrix leaves only rounding noise after centring.
    if spread <= 64 * np.finfo(np.float64).eps:
        raise ValueError(f"{name} has zero variance (every row is the same), so its shape is undefined")
    return xc / spread


def _paired_features(F0: Any, F1: Any):
    """Before / after features as float64 arrays of one shape with at least one sample."""
    f0 = _as_float64(F0, "F0")
    f1 = _as_float64(F1, "F1")
    if f0.shape != f1.shape:
        raise ValueError(f"F0 and F1 must have the same shape, got {tuple(f0.shape)} and {tuple(f1.shape)}")
    if f0.shape[0] == 0:
        raise ValueError("F0 and F1 are empty (0 samples)")
    return f0, f1


def mean_squared_change(F0: Any, F1: Any) -> float:
    """Mean over samples of the squared Euclidean change of a feature vector.

    ``((F1 - F0) ** 2).sum(1).mean()``: summed over feature dimensions, averaged over samples, the form in
    which Kumar et al. report "mean squared change of penultimate features" (they print it x100).
    Dividing by the feature dimension ``D`` gives the per-coordinate mean if that is wanted.

    Args:
        F0, F1: ``(N, D)`` features before / after, numpy or torch, any float dtype, ``N >= 1``.
    """
    f0, f1 = _paired_features(F0, F1)
    return float(((f1 - f0) ** 2).sum(axis=1).mean())


def mean_cosine_change(F0: Any, F1: Any) -> float:
    """Mean over samples of ``1 - cos(f0, f1)``, in ``[0, 2]``.

    Zero vectors have no direction: a pair of zero vectors counts as unchanged (0), a zero vector against a
    non-zero one as orthogonal (1).

    Args:
        F0, F1: ``(N, D)`` features before / after, numpy or torch, any float dtype, ``N >= 1``.
    """
    f0, f1 = _paired_features(F0, F1)
    n0 = np.linalg.norm(f0, axis=1)
    n1 = np.linalg.norm(f1, axis=1)
    dot = (f0 * f1).sum(axis=1)
    both = (n0 > 0) & (n1 > 0)
    cos = np.where(both, dot / np.where(both, n0 * n1, 1.0), 0.0)
    cos = np.where((n0 == 0) & (n1 == 0), 1.0, np.clip(cos, -1.0, 1.0))
    return float((1.0 - cos).mean())


def procrustes_distance(A: Any, B: Any) -> float:
    """Orthogonal Procrustes distance between two representations of the same ``N`` inputs.

    Each matrix is centred (column means removed) and scaled to unit Frobenius norm, giving ``Â`` and ``B̂``;
    the result is ``min over orthogonal Q of ||Â - B̂ Q||_F``. With ``B̂ᵀÂ = U S Vᵀ`` the minimiser is
    ``Q = U Vᵀ`` and the minimum equals ``sqrt(2 - 2 * sum(S))``; the residual is evaluated directly rather
    than from that formula because ``2 - 2 * sum(S)`` cancels catastrophically near 0 (it would floor the
    distance of identical inputs at ~1e-8). The value lies in ``[0, sqrt(2)]`` and is 0 exactly when one
    matrix is a rotated / reflected, uniformly scaled and shifted copy of the other.

    Args:
        A, B: ``(N, k)`` numpy arrays or torch tensors (any float dtype, computed in float64), ``N >= 2``,
            neither constant across rows.
    """
    a, b = _paired(A, B, same_width=True)
    a = _centre(a, "A")
    b = _centre(b, "B")
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)
    n, k = a.shape
    if n >= k:
        u, _, vt = np.linalg.svd(b.T @ a)
        return float(np.linalg.norm(a - b @ (u @ vt)))
    # Fewer inputs than features: work in the n-dimensional row spaces. With aᵀ = Qa Ra and bᵀ = Qb Rb
    # (thin QR, Q (k, n) orthonormal), bᵀa = Qb (Rb Raᵀ) Qaᵀ; with Rb Raᵀ = U S Vᵀ the optimal rotation
    # maps as Qb U Vᵀ Qaᵀ on those spaces (b vanishes off its own), so a - bQ = (Raᵀ - Rbᵀ U Vᵀ) Qaᵀ
    # and the residual is that of (n, n) matrices: an n^3 SVD in place of a k^3 one.
    ra = np.linalg.qr(a.T, mode="r")
    rb = np.linalg.qr(b.T, mode="r")
    u, _, vt = np.linalg.svd(rb @ ra.T)
    return float(np.linalg.norm(ra.T - rb.T @ (u @ vt)))


def linear_cka(A: Any, B: Any) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) between two representations.

    On column-centred ``A``, ``B``: ``||BᵀA||_F^2 / (||AᵀA||_F ||BᵀB||_F)``, in ``[0, 1]``; 1 when ``B`` is an
    orthogonal transform of ``A`` up to isotropic scale and shift. The widths may differ. Gram norms are taken
    in whichever space is smaller (``||AᵀA||_F = ||AAᵀ||_F``), so wide features cost ``O(N^2 k)``, not
    ``O(N k^2)``.

    Args:
        A: ``(N, k1)``; B: ``(N, k2)``; numpy or torch, any float dtype (float64 inside), ``N >= 2``.
    """
    a, b = _paired(A, B, same_width=False)
    a = _centre(a, "A")
    b = _centre(b, "B")
    # Scaling first keeps the fourth powers below from overflowing on large activations.
    a /= np.linalg.norm(a)
    b /= np.linalg.norm(b)

    def gram_norm(x: np.ndarray) -> float:
        return float(np.linalg.norm(x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T))

    if a.shape[1] * b.shape[1] <= a.shape[0] ** 2:
        cross = float(np.linalg.norm(b.T @ a) ** 2)
    else:
        cross = float(np.sum((a @ a.T) * (b @ b.T)))
    return float(np.clip(cross / (gram_norm(a) * gram_norm(b)), 0.0, 1.0))


def _orthonormal_rows(x: np.ndarray, name: str) -> np.ndarray:
    q, r = np.linalg.qr(x.T)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * max(float(diag.max()), np.finfo(np.float64).tiny):
        raise ValueError(f"{name} must have linearly independent rows, got shape {x.shape} of lower rank")
    return q.T


def subspace_distance(B1: Any, B2: Any) -> float:
    """The LP-FT paper's feature-extractor distance ``min over orthogonal U of ||B1 - U B2||_2``.

    The rows of each ``(k, d)`` matrix are first orthonormalised (QR of the transpose), so the distance
    depends only on the row spaces. The minimiser is the orthogonal Procrustes rotation: with
    ``B1 B2ᵀ = P diag(cos θ) Rᵀ`` (``θ`` the principal angles between the row spaces) take ``U = P Rᵀ``; then
    ``(B1 - U B2)(B1 - U B2)ᵀ = 2I - 2 P diag(cos θ) Pᵀ``, so the spectral norm is
    ``sqrt(2 - 2 cos θ_max) = 2 sin(θ_max / 2)``. No ``U`` does better: choose ``y`` with ``B1ᵀy`` the unit
    principal vector at angle ``θ_max`` from row(B2); ``||(B1 - U B2)ᵀy||`` is the distance from it to the
    unit vector ``B2ᵀUᵀy`` of row(B2), at least ``2 sin(θ_max / 2)``. The residual is evaluated directly (no
    cancellation for small angles). Range ``[0, sqrt(2)]``.

    Args:
        B1, B2: ``(k, d)`` numpy arrays or torch tensors with ``1 <= k <= d`` and full row rank.
    """
    b1 = _as_float64(B1, "B1")
    b2 = _as_float64(B2, "B2")
    if b1.shape != b2.shape:
        raise ValueError(f"B1 and B2 must have the same shape (k, d), got {tuple(b1.shape)} and {tuple(b2.shape)}")
    k, d = b1.shape
    if not 1 <= k <= d:
        raise ValueError(f"B1 and B2 must be (k, d) with 1 <= k <= d, got shape {(k, d)}")
    b1 = _orthonormal_rows(b1, "B1")
    b2 = _orthonormal_rows(b2, "B2")
    p, _, rt = np.linalg.svd(b1 @ b2.T)
    return float(np.linalg.norm(b1 - (p @ rt) @ b2, ord=2))


# --------------------------------------------------------------------------------------------------------
# Feature change of real networks


FeatureFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def _feature_fn(model: torch.nn.Module, feature_fn: Optional[FeatureFn], which: str) -> FeatureFn:
    if feature_fn is not None:
        if not callable(feature_fn):
            raise TypeError(f"feature_fn must be callable(model, x) -> (N, D), got {type(feature_fn).__name__}")
        return feature_fn
    method = getattr(model, "features", None)
    # torchvision's VGG / MobileNet / EfficientNet have a `features` *submodule* returning a feature map,
    # not the penultimate vector: only a bound method counts.
    if callable(method) and not isinstance(method, torch.nn.Module):
        return lambda m, x: m.features(x)
    raise TypeError(
        f"{which} ({type(model).__name__}) has no features(x) method giving penultimate features; wrap it in "
        "pyrobust.models.FeatureModel or pass feature_fn=callable(model, x) -> (N, D) features"
    )


def _inputs(batch: Any, name: str) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(
        f"loader {name!r} must yield input tensors or (inputs, labels, ...) sequences, got {type(batch).__name__}"
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _features(fn: FeatureFn, model: torch.nn.Module, x: torch.Tensor, device, which: str, name: str) -> torch.Tensor:
    f = fn(model, x.to(device if device is not None else _model_device(model)))  # user fn: as given
    if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"features of {which} on loader {name!r} must be a ({x.shape[0]}, D) tensor, got {shape}; "
            "pool or flatten inside features(x) / feature_fn"
        )
    if not torch.isfinite(f).all():
        raise ValueError(f"features of {which} on loader {name!r} contain non-finite values (NaN or inf)")
    return f.detach().to("cpu")


@torch.no_grad()
def feature_change(
    model_before: torch.nn.Module,
    model_after: torch.nn.Module,
    loaders: Mapping[str, Iterable],
    *,
    device: Optional[torch.device | str] = None,
    max_batches: Optional[int] = None,
    feature_fn: Optional[FeatureFn] = None,
) -> dict[str, dict[str, float]]:
    """Change of the penultimate features between two models, per named set of inputs.

    Both models see the same batches in one pass over each loader (so shuffling loaders are fine). Features
    come from ``feature_fn(model, x)`` when given, else from the model's ``features(x)`` method (as
    ``pyrobust.models.FeatureModel`` provides). Models run in eval mode under ``torch.no_grad``; each
    submodule's train/eval flag is restored afterwards. Features are kept on the CPU in the model's dtype:
    memory is ``2 * N * D`` elements per set, bounded with ``max_batches``.

    Args:
        model_before, model_after: modules whose features have the same width ``D``.
        loaders: name -> DataLoader or any iterable of input tensors or ``(inputs, labels, ...)`` batches.
        device: where inputs are sent; default the device of each model's first parameter. Models are not moved.
        max_batches: use at most this many batches of each loader (``None``: all).
        feature_fn: ``callable(model, x) -> (N, D)`` overriding ``model.features``.

    Returns:
        ``{name: {"mean_squared_change", "mean_cosine_change", "procrustes_distance", "linear_cka", "n"}}``
        (see the functions of the same names; ``n`` is the number of inputs used, an int).
    """
    if not isinstance(loaders, Mapping):
        raise TypeError(f"loaders must be a dict name -> loader, got {type(loaders).__name__}")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    if device is not None:
        from pyrobust.errors import resolve_device

        resolve_device(device)  # a device that does not exist is refused before the first batch
    fn_before = _feature_fn(model_before, feature_fn, "model_before")
    fn_after = _feature_fn(model_after, feature_fn, "model_after")

    modes = {m: m.training for model in (model_before, model_after) for m in model.modules()}
    model_before.eval()
    model_after.eval()
    try:
        results = {}
        for name, loader in loaders.items():
            before, after = [], []
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x = _inputs(batch, name)
                f0 = _features(fn_before, model_before, x, device, "model_before", name)
                f1 = _features(fn_after, model_after, x, device, "model_after", name)
                if f0.shape[1] != f1.shape[1]:
                    raise ValueError(
                        f"model_before and model_after give features of different widths on loader {name!r}: "
                        f"{f0.shape[1]} and {f1.shape[1]}"
                    )
                before.append(f0)
                after.append(f1)
            if not before:
                raise ValueError(f"loader {name!r} yielded no batches")
            F0 = torch.cat(before)
            F1 = torch.cat(after)
            results[name] = {
                "mean_squared_change": mean_squared_change(F0, F1),
                "mean_cosine_change": mean_cosine_change(F0, F1),
                "procrustes_distance": procrustes_distance(F0, F1),
                "linear_cka": linear_cka(F0, F1),
                "n": int(F0.shape[0]),
            }
        return results
    finally:
        for m, training in modes.items():
            m.training = training
