"""Which head of the probe sweep the study's LP and LP-FT start from.

The sweep's own choice (:attr:`pyrobust.probe.SweepResult.best_C`) is the C with the best validation
accuracy, ties to the stronger penalty. Accuracy on a few hundred validation images is flat over a
wide range of C, so that choice often rests on one image and can land on the weakest penalty of
the grid: a large-norm, over-confident head. Fine-tuning from such a head with mixed (soft) targets
starts from large losses and gradients and moves the features far from the pretrained ones, which
defeats LP-FT's purpose. The study therefore takes, among the Cs whose validation accuracy is within
one standard error of the best, the one with the lowest validation loss: accuracy says which heads
are equally good, the loss (the quantity fine-tuning goes on to minimise) picks the calibrated one.
``docs/lpft-study.md`` gives the ablation behind the rule.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["accuracy_margin", "lp_head_index"]

RULE = ("lowest validation loss among the Cs whose validation accuracy is within one standard error "
        "of the best")


def accuracy_margin(best_accuracy: float, n_val: int) -> float:
    """One standard error of a validation accuracy ``best_accuracy`` on ``n_val`` images, at least one image."""
    if n_val < 1:
        raise ValueError(f"n_val must be >= 1, got {n_val!r}")
    p = float(best_accuracy)
    return max(math.sqrt(max(p * (1.0 - p), 0.0) / n_val), 1.0 / n_val)


def lp_head_index(val_accuracy, val_loss, n_val: int) -> int:
    """Index (into the sweep's increasing Cs) of the head the study uses: the lowest ``val_loss`` among the Cs
    whose ``val_accuracy`` is within :func:`accuracy_margin` of the best; ties go to the smaller C."""
    acc = np.asarray(val_accuracy, dtype=np.float64)
    loss = np.asarray(val_loss, dtype=np.float64)
    if acc.ndim != 1 or acc.shape != loss.shape or acc.size == 0:
        raise ValueError(f"val_accuracy and val_loss must be equal-length 1-D sequences, got shapes "
                         f"{acc.shape} and {loss.shape}")
    best = float(acc.max())
    candidates = np.flatnonzero(acc >= best - accuracy_margin(best, n_val) - 1e-12)
    losses = np.where(np.isfinite(loss[candidates]), loss[candidates], np.inf)
    return int(candidates[int(np.argmin(losses))])
