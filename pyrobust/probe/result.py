"""``SweepResult``: the outcome of a C sweep, one entry per C, and the best head.

Made by :func:`pyrobust.probe.probe_sweep`; printable as a table (``table()``), usable as a
``torch.nn.Linear`` on raw features (``to_linear()``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pyrobust.probe.estimator import LogisticProbe

__all__ = ["SweepResult"]


@dataclasses.dataclass
class SweepResult:
    """Outcome of :func:`probe_sweep`, one entry per C (in increasing C order).

    Attributes:
        Cs: ``(n_C,)`` inverse regularisation strengths, increasing.
        val_accuracy, val_loss, train_loss: ``(n_C,)`` float64; ``train_loss`` is the mean
            (weighted) cross-entropy without the penalty; ``val_loss`` averages over validation
            samples whose label was seen in training.
        n_iter: ``(n_C,)`` solver iterations (one gradient-equivalent each).
        converged: ``(n_C,)`` bool, ``grad_norm <= tol`` and ``gap <= tol`` and ``gap <= 1e-6``
            of the objective (the solver's stopping tests).
        grad_norm: ``(n_C,)`` final max-abs gradient of the objective (scikit-learn's ``gtol``).
        gap: ``(n_C,)`` final estimated objective gap ``g' M g / 2``, M the solver's
            preconditioner (about the inverse Hessian).
        coefs, intercepts: per C, the raw-feature head (``coef_`` / ``intercept_`` layout).
        classes: the label values.
        best_index, best_C: highest val accuracy, ties going to the smaller C.
        best_estimator: a fitted :class:`LogisticProbe` at ``best_C`` with the sweep's settings
            and compute dtype (refit on train + val when ``refit=True``).
    """

    Cs: np.ndarray
    val_accuracy: np.ndarray
    val_loss: np.ndarray
    train_loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    grad_norm: np.ndarray
    gap: np.ndarray
    coefs: list
    intercepts: list
    classes: np.ndarray
    best_index: int
    best_C: float
    best_estimator: LogisticProbe
    seconds: float = 0.0

    def to_linear(self) -> torch.nn.Linear:
        """The best head as ``torch.nn.Linear`` acting on raw features."""
        return self.best_estimator.to_linear()

    def table(self) -> str:
        """The per-C table as text."""
        rows = [f"{'C':>10} {'val acc':>8} {'val loss':>9} {'train loss':>10} {'iters':>6} "
                f"{'grad norm':>10} {'gap':>9} conv"]
        for i, c in enumerate(self.Cs):
            mark = " *" if i == self.best_index else ""
            rows.append(f"{c:10.3g} {self.val_accuracy[i]:8.4f} {self.val_loss[i]:9.4f} "
                        f"{self.train_loss[i]:10.4f} {int(self.n_iter[i]):6d} "
                        f"{self.grad_norm[i]:10.2e} {self.gap[i]:9.2e} "
                        f"{'yes' if self.converged[i] else 'NO'}{mark}")
        return "\n".join(rows)
