"""The LP step: a linear probe on cached features, returned as an ``nn.Linear`` head for the backbone.

``LPFT_DEFAULTS`` are the LP-FT authors' probe settings (REFERENCES.md §LP-FT): C over ``logspace(-7, 2, 50)``
swept with warm starts, best C by ID validation accuracy, features standardised by one scalar mean and std that is
folded back into the head so that it acts on raw features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

LPFT_DEFAULTS = {"Cs": np.logspace(-7, 2, 50), "standardize": "scalar"}


def _arrays(cache, what: str):
    if hasattr(cache, "features") and hasattr(cache, "labels"):
        return cache.features, cache.labels
    if isinstance(cache, (tuple, list)) and len(cache) == 2:
        return cache[0], cache[1]
    raise TypeError(f"{what} must be a FeatureCache (or anything with .features / .labels) or an (X, y) pair, "
                    f"got {type(cache).__name__}")


def linear_probe(cache_train, cache_val, Cs=None, **sweep_kwargs) -> tuple[nn.Linear, object]:
    """Fit the probe sweep on ``cache_train`` and select C on ``cache_val``.

    Args:
        cache_train, cache_val: :class:`pyrobust.features.FeatureCache` (or ``(X, y)`` with ``X`` ``(N, D)``
            float array / memmap / tensor and ``y`` ``(N,)`` int labels).
        Cs: the C grid; default ``LPFT_DEFAULTS["Cs"]``.
        **sweep_kwargs: passed to :func:`pyrobust.probe.probe_sweep` (``standardize`` defaults to
            ``"scalar"``, ``device``, ``progress``, ...).

    Returns:
        ``(head, result)``: ``head`` an ``nn.Linear(D, K)`` (float32) computing the best probe's logits from raw
        features (standardisation folded in), ``result`` the ``SweepResult``.
    """
    from pyrobust.probe import probe_sweep

    X_train, y_train = _arrays(cache_train, "cache_train")
    X_val, y_val = _arrays(cache_val, "cache_val")
    if X_train.ndim != 2 or X_val.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shapes {tuple(X_train.shape)} and {tuple(X_val.shape)}")
    if X_train.shape[1] != X_val.shape[1]:
        raise ValueError(f"train and val features have different dims: {X_train.shape[1]} vs {X_val.shape[1]}")
    kwargs = {k: v for k, v in LPFT_DEFAULTS.items() if k != "Cs"}
    kwargs.update(sweep_kwargs)
    result = probe_sweep(X_train, y_train, X_val, y_val, LPFT_DEFAULTS["Cs"] if Cs is None else Cs, **kwargs)
    classes = np.asarray(result.best_estimator.classes_)
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"training labels must be 0..K-1 with every class present to make a head, got classes "
                         f"{classes[:20].tolist()}")
    head = result.to_linear().to(torch.float32)
    return head, result


def head_at(result, index: int) -> nn.Linear:
    """The sweep's head at ``result.Cs[index]`` as an ``nn.Linear`` (float32) on raw features; at
    ``result.best_index`` it equals :func:`linear_probe`'s head."""
    if not 0 <= int(index) < len(result.Cs):
        raise IndexError(f"index {index} out of range for a sweep of {len(result.Cs)} values of C")
    coef = torch.from_numpy(np.asarray(result.coefs[index]))
    head = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        head.weight.copy_(coef)
        head.bias.copy_(torch.from_numpy(np.asarray(result.intercepts[index])))
    return head
