"""Scoring a fitted raw-feature head: decision scores and validation metrics, chunk by chunk.

A head is ``coef`` ``(K, D)`` and ``intercept`` ``(K,)`` (``(1, D)`` and ``(1,)`` for two classes),
the layout of ``LogisticProbe.coef_`` / ``intercept_``. ``X`` is scored in row chunks on the
requested device, so a memory map or host features are never copied whole.
"""

from __future__ import annotations

import numpy as np
import torch

from pyrobust.probe import data as _data
from pyrobust.probe import group as _group

__all__ = ["decision_scores", "head_metrics"]


def _score_chunks(X: torch.Tensor, coef: np.ndarray, intercept: np.ndarray, chunk_rows: int,
                  device, dtype):
    """Yield ``(row offset, X_chunk @ coef.T + intercept)`` on ``device`` in ``dtype``."""
    W = torch.from_numpy(np.ascontiguousarray(coef.T)).to(device, dtype)
    b = torch.from_numpy(np.asarray(intercept)).to(device, dtype)
    k = W.shape[1]
    if W.device.type == "cpu" and 2 <= k < 16:
        # Zero columns up to 16: MKL runs 2-15 output columns 2-3x slower than 16
        # (docs/probe-solver.md, "Skinny products"); the scores are the first k columns.
        W = torch.nn.functional.pad(W, (0, 16 - k))
        b = torch.nn.functional.pad(b, (0, 16 - k))
    for r0, xc in _data.iter_chunks(X, chunk_rows, device, dtype):
        yield r0, torch.addmm(b, xc, W)[:, :k]


def decision_scores(X: torch.Tensor, coef: np.ndarray, intercept: np.ndarray,
                    chunk_rows: int = 65536, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """``X @ coef.T + intercept`` computed in chunks, ``(N, K)`` (or ``(N, 1)``) float on CPU."""
    out = torch.empty(X.shape[0], np.shape(coef)[0], dtype=dtype)
    for r0, s in _score_chunks(X, coef, intercept, chunk_rows, device, dtype):
        out[r0:r0 + s.shape[0]] = s.cpu()
    return out


def _metric_sums(scores: torch.Tensor, y: torch.Tensor, kn: torch.Tensor):
    """(number correct, loss sum over known labels) as float64 tensors on the scores' device."""
    s = scores.double()
    if s.shape[1] == 1:
        pred = (s[:, 0] > 0).long()
        loss = torch.nn.functional.softplus(s[:, 0]) - y.double() * s[:, 0]
    else:
        pred = s.argmax(1)
        loss = torch.logsumexp(s, 1) - s.gather(1, y[:, None])[:, 0]
    return ((pred == y) & kn).double().sum(), torch.where(kn, loss, 0.0).sum()


def head_metrics(X: torch.Tensor, coef: np.ndarray, intercept: np.ndarray, codes: np.ndarray,
                 known: np.ndarray, chunk_rows: int = 65536, device="cpu", dtype=torch.float32,
                 group=None):
    """Accuracy and mean cross-entropy of a raw-feature head on ``(X, codes)``, computed chunk by
    chunk on ``device``: only two numbers leave it, never an ``(N, K)`` score matrix.

    Args:
        X: ``(N, D)`` features, any float dtype and device.
        coef, intercept: ``(K, D)`` and ``(K,)`` (``(1, D)`` and ``(1,)`` for a binomial head).
        codes: ``(N,)`` int class codes (indices into the head's classes).
        known: ``(N,)`` bool, False for labels unseen in training: those count as wrong and are
            left out of the loss.
        group: a ``torch.distributed`` group whose ranks each score their own rows: the metrics
            are over every rank's rows (one all-reduce of four sums), the same on every rank.

    Returns:
        ``(accuracy, mean loss)`` as Python floats (the loss is NaN when no label is known).
    """
    y = torch.from_numpy(np.where(known, codes, 0)).to(device)
    kn = torch.from_numpy(known).to(device)
    # [number correct, loss sum, rows, rows with a known label]
    sums = torch.tensor([0.0, 0.0, len(known), int(known.sum())], dtype=torch.float64,
                        device=device)
    for r0, s in _score_chunks(X, coef, intercept, chunk_rows, device, dtype):
        c, l = _metric_sums(s, y[r0:r0 + s.shape[0]], kn[r0:r0 + s.shape[0]])
        sums[0] += c
        sums[1] += l
    correct, loss_sum, n, n_known = _group.sum_(sums, group).tolist()
    return (correct / n, loss_sum / n_known if n_known else float("nan"))
