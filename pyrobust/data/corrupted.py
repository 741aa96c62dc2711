"""Corrupted copies of a dataset and the mean-corruption-error summary of ImageNet-C.

``CorruptedDataset`` wraps any dataset of ``(image in [0, 1], label)`` and corrupts item ``i`` with
:func:`pyrobust.data.corruptions.corrupt` using ``i`` as the image index, so an item is the same
however it is batched or in which worker it is loaded.

``mean_corruption_error`` follows Hendrycks & Dietterich (ICLR 2019), with error = 1 − accuracy and
``E[c][s]`` the error on corruption ``c`` at severity ``s``:

- no baseline: the plain mean, ``mean_c mean_s E[c][s]``;
- ``baseline`` ``B`` (same structure, e.g. the errors of a reference method such as CutMix or AlexNet):
  the paper's mCE, ``mean_c (Σ_s E[c][s] / Σ_s B[c][s])`` (1.0 = as robust as the baseline);
- ``baseline`` plus ``clean_error`` and ``baseline_clean_error``: the paper's *relative* mCE,
  ``mean_c (Σ_s (E[c][s] − E_clean) / Σ_s (B[c][s] − B_clean))``, the degradation relative to the
  baseline's degradation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from pyrobust.checks import check_int, check_real
from pyrobust.data.corruptions import CORRUPTIONS, corrupt

__all__ = ["CorruptedDataset", "mean_corruption_error"]


class CorruptedDataset(Dataset):
    """``dataset`` with ``corruption`` at ``severity`` applied to every image, deterministically by index.

    Args:
        dataset: yields ``(float tensor (C, H, W) in [0, 1], label)``.
        corruption: a name in :data:`pyrobust.data.CORRUPTIONS`.
        severity: 1–5.
        seed: experiment seed (see :func:`pyrobust.data.corrupt`).

    Supports ``__getitems__`` (used by ``DataLoader``) so a batch is corrupted in one vectorised call.
    """

    def __init__(self, dataset, corruption: str, severity: int, seed: int = 0):
        if corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"dataset must be a map-style dataset (indexable, with a length), got {type(dataset).__name__}")
        self.dataset, self.corruption, self.severity = dataset, corruption, severity
        self.seed = check_int(seed, "seed")
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        i = int(i) % len(self)
        x, y = self.dataset[i]
        return corrupt(x, self.corruption, self.severity, seed=self.seed, indices=[i]), y

    def __getitems__(self, indices: Sequence[int]):
        idx = [int(i) % len(self) for i in indices]
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(idx) if getitems is not None else [self.dataset[i] for i in idx]
        if not items:
            return []
        x = torch.stack([it[0] for it in items])
        xc = corrupt(x, self.corruption, self.severity, seed=self.seed, indices=idx)
        return [(img, it[1]) for img, it in zip(xc.unbind(0), items)]


def _as_table(errors, what: str) -> dict[str, list[float]]:
    if not isinstance(errors, Mapping) or not errors:
        raise ValueError(f"{what} must be a non-empty mapping {{corruption: [error per severity]}}, got {errors!r}")
    table = {}
    for name, row in errors.items():
        try:
            vals = [float(v) for v in row]
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{name!r}] should be a sequence of errors in [0, 1], got {row!r}") from None
        if not vals:
            raise ValueError(f"{what}[{name!r}] has no severities")
        bad = [v for v in vals if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"{what}[{name!r}] has errors outside [0, 1]: {bad} (error = 1 - accuracy)")
        table[name] = vals
    return table


def mean_corruption_error(errors, baseline=None, *, clean_error=None, baseline_clean_error=None) -> float:
    """Mean corruption error over corruptions and severities (see the module docstring).

    Args:
        errors: ``{corruption: [error at severity 1, 2, ...]}``, errors in ``[0, 1]``.
        baseline: the same structure for the reference method (same corruptions, same lengths),
            or ``None`` for the plain mean.
        clean_error, baseline_clean_error: clean errors of the two methods; given together (with a
            ``baseline``), the result is the relative mCE.

    Returns:
        a float: a mean error in ``[0, 1]`` without baseline, a ratio (1.0 = baseline) with one.

    Raises:
        ValueError: empty or mismatched tables, errors outside ``[0, 1]``, a zero baseline denominator.
    """
    table = _as_table(errors, "errors")
    if baseline is None:
        if clean_error is not None or baseline_clean_error is not None:
            raise ValueError("clean_error and baseline_clean_error need a baseline")
        vals = [v for row in table.values() for v in row]
        return sum(vals) / len(vals)
    base = _as_table(baseline, "baseline")
    if set(base) != set(table):
        raise ValueError(
            f"errors and baseline must cover the same corruptions; only in errors: {sorted(set(table) - set(base))}, "
            f"only in baseline: {sorted(set(base) - set(table))}"
        )
    relative = clean_error is not None or baseline_clean_error is not None
    if relative and (clean_error is None or baseline_clean_error is None):
        raise ValueError("give both clean_error and baseline_clean_error for the relative mCE, or neither")
    e0, b0 = ((check_real(clean_error, "clean_error", min=0, max=1),
               check_real(baseline_clean_error, "baseline_clean_error", min=0, max=1)) if relative else (0.0, 0.0))
    ratios = []
    for name, row in table.items():
        if len(base[name]) != len(row):
            raise ValueError(f"{name!r}: {len(row)} severities in errors but {len(base[name])} in baseline")
        denom = sum(b - b0 for b in base[name])
        if denom == 0:
            raise ValueError(f"baseline denominator for {name!r} is zero; the ratio is undefined")
        ratios.append(sum(e - e0 for e in row) / denom)
    return sum(ratios) / len(ratios)
