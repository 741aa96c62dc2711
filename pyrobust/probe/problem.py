"""One probe problem: validated training data and the statistics every C of a sweep shares.

``Problem`` is the probe package's internal model of scikit-learn's L2 logistic-regression
objective on centred (and optionally standardised) features; ``LogisticProbe`` solves it for one C,
``probe_sweep`` for a grid. The solver behind ``Problem.solve`` is ``torch.ops.pyrobust.probe_solve``
(see ``docs/probe-solver.md``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pyrobust.checks import check_choice, check_int
from pyrobust.probe import data as _data
from pyrobust.probe import group as _group

__all__ = ["Problem", "gap_tolerance", "GAP_RTOL"]

# The estimated objective gap must also be below this fraction of the objective (see
# docs/probe-solver.md, "stopping").
GAP_RTOL = 1e-6
# X is rotated once into the eigenbasis of its covariance (a copy in the compute dtype) where
# D >= N / ROTATE_N_PER_D and the copy takes at most ROTATE_MAX_BYTES: the solver then skips the
# two (D, D) products of every iteration (docs/probe-solver.md, "X in the eigenbasis").
ROTATE_N_PER_D = 16
ROTATE_MAX_BYTES = 1 << 30
# ... keeping only the directions whose variance is above this fraction of the largest: the
# others (N < D leaves D - N + 1 of them at 0) carry no signal, only round-off that the
# preconditioner, 1 / lambda there, would magnify.
ROTATE_RANK_RTOL = 1e-10


def gap_tolerance(tol, objective):
    """The tolerance on the estimated objective gap: ``tol`` and ``GAP_RTOL`` of the objective."""
    return np.minimum(tol, GAP_RTOL * np.asarray(objective, dtype=np.float64))


class Problem:
    """Validated training data and the statistics shared by every C.

    ``compute_dtype``: ``"float32"`` / ``"float64"`` or ``torch.float32`` / ``torch.float64``.
    ``process_group``: a ``torch.distributed`` group whose ranks each hold their own rows of
    ``(X, y)``: the classes, weight sums and feature statistics are over every rank's rows, and
    the solver all-reduces its sums over rows, so every rank solves the problem on all the rows.
    """

    def __init__(self, X, y, *, sample_weight=None, class_weight=None, standardize="none",
                 device="cpu", compute_dtype=torch.float32, chunk_rows=None, process_group=None):
        compute_dtype = _data.as_compute_dtype(compute_dtype)
        check_choice(standardize, "standardize", ("none", "feature", "scalar"))
        if chunk_rows is not None:
            chunk_rows = check_int(chunk_rows, "chunk_rows", min=0)
        self.group = _group.check_group(process_group)
        self.X = _data.as_feature_tensor(X, "X")
        self.classes, codes = _data.encode_labels(y, "y", self.group)
        n = self.X.shape[0]
        if codes.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has {codes.shape[0]} labels")
        if len(self.classes) < 2:
            raise ValueError(f"need at least 2 classes in y, got {len(self.classes)} class: "
                             f"{self.classes.tolist()}")
        self.device = _data.as_compute_device(device)
        if self.device.type == "cuda" and self.device.index is None:
            # torch.device("cuda") != torch.device("cuda:0"): name the index, so that "is X
            # already there" below compares equal devices equal
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = compute_dtype
        if not isinstance(X, np.memmap):
            self.X = _data.to_device_if_fits(self.X, self.device)  # else stream from host
        # Half-precision features on a GPU are multiplied as stored, on tensor cores, the float32
        # operand split in parts (probe_solve's products="split"): no converted copy of X, and
        # 2-3 float16 GEMMs cost far less than one float32 GEMM.
        self.products = ("split" if self.device.type == "cuda" and compute_dtype == torch.float32
                         and self.X.dtype in (torch.float16, torch.bfloat16) else "convert")
        if chunk_rows is None:
            if isinstance(X, np.memmap) or self.X.device != self.device:
                chunk_rows = 16384  # streamed from disk / host memory
            elif self.products == "split":
                chunk_rows = 262144  # bounds the split's float32 temporaries (1 GB at K = 1000)
            else:
                chunk_rows = 16384 if self.X.dtype != compute_dtype else 0
        self.chunk_rows = int(chunk_rows)
        _data.check_finite(self.X, self.chunk_rows or 65536, "X")
        if class_weight is not None and isinstance(class_weight, dict):
            cw = _data.class_weight_array(class_weight, self.classes)
            weights = _data.sample_weights(codes, len(self.classes), sample_weight) * cw[codes]
        else:
            weights = _data.sample_weights(codes, len(self.classes), sample_weight, class_weight,
                                           self.group)
        wsum = _group.sum_(torch.tensor([weights.sum()], dtype=torch.float64), self.group)
        if not wsum > 0:
            raise ValueError("the sample weights sum to zero: nothing to fit")
        self.k = 1 if len(self.classes) == 2 else len(self.classes)
        self.wsum = float(wsum)
        self.target = torch.from_numpy(codes).to(self.device)
        self.weight = torch.from_numpy(weights).to(self.device, compute_dtype)
        center, scale, (vecs, vals) = _data.feature_stats(
            self.X, self.weight, standardize, self.chunk_rows or 65536, self.device, compute_dtype,
            self.group)
        self.center, self.scale = center, scale
        self.eigvecs, self.eigvals = vecs.to(compute_dtype), vals.to(compute_dtype)
        d = self.X.shape[1]
        itemsize = torch.finfo(compute_dtype).bits // 8
        keep = vals > ROTATE_RANK_RTOL * vals.max()
        # Ranks decide alike only on shared facts, and their rows differ: no rotation with a group.
        # Constant features keep no direction: the op then takes them as they are.
        self.in_eigenbasis = (self.group is None and self.products == "convert"
                              and not isinstance(X, np.memmap) and self.X.device == self.device
                              and ROTATE_N_PER_D * d >= n and n * d * itemsize <= ROTATE_MAX_BYTES
                              and bool(keep.any()))
        self.X_solve, self.solve_chunk_rows = self.X, self.chunk_rows
        # (center, scale, eigvecs) as the op takes them: the statistics, or for a rotated X none
        self.op_stats = (center.to(compute_dtype), scale.to(compute_dtype), self.eigvecs)
        if self.in_eigenbasis:
            self.eigvecs, self.eigvals = self.eigvecs[:, keep], self.eigvals[keep]
            self.X_solve = torch.empty(n, int(keep.sum()), dtype=compute_dtype, device=self.device)
            c, s = center.to(compute_dtype), scale.to(compute_dtype)
            for r0, xc in _data.iter_chunks(self.X, self.chunk_rows or 65536, self.device,
                                            compute_dtype):
                torch.matmul((xc - c) / s, self.eigvecs, out=self.X_solve[r0:r0 + xc.shape[0]])
            self.solve_chunk_rows = 0
            d_kept = self.X_solve.shape[1]
            self.op_stats = (torch.zeros(d_kept, dtype=compute_dtype, device=self.device),
                             torch.ones(d_kept, dtype=compute_dtype, device=self.device),
                             self.eigvecs.new_empty((0, 0)))

    def zeros(self, m: int):
        d = self.X_solve.shape[1]  # the kept eigen-directions where in_eigenbasis
        return (torch.zeros(m, d, self.k, dtype=self.dtype, device=self.device),
                torch.zeros(m, self.k, dtype=self.dtype, device=self.device))

    def lam(self, C: float) -> float:
        """The penalty ``lambda = 1 / (C * sum w)`` of the mean-loss objective."""
        return 1.0 / (C * self.wsum)

    def solve(self, Cs: Sequence[float], coef, intercept, *, tol, max_iter, history=30,
              pairs=None):
        """Solve for the m values ``Cs`` jointly from ``(coef, intercept)`` (internal model: on
        ``(x - center) / scale``, and in the eigenbasis of its covariance where
        ``in_eigenbasis``; :meth:`fold` maps it onto raw features).

        Each C stops once its max-abs gradient is ``<= tol`` and its estimated objective gap is
        ``<= gap_tolerance(tol, objective)`` (the op's ``tol`` and ``gap_rtol``).
        ``pairs``: ``(history_s, history_y, lambda)`` from the previous solve of a path, or None.
        Returns ``(coef, intercept, n_iter, grad_norm, gap, loss, pairs)``."""
        # Imported here, not at the top: importing pyrobust.ops loads the compiled core, which
        # `import pyrobust.probe` does not need until the first solve.
        from pyrobust.ops import probe as _ops

        lambdas = torch.tensor([self.lam(c) for c in Cs], dtype=torch.float64)
        hs, hy, hl = pairs if pairs is not None else (None, None, 0.0)
        coef, intercept, n_iter, gn, gap, loss, hs, hy = _ops.solve(
            self.X_solve, self.target, self.weight, lambdas, coef, intercept, *self.op_stats,
            self.eigvals, tol, max_iter, history, self.solve_chunk_rows, hs, hy, hl,
            self.products, _group.group_name(self.group), GAP_RTOL)
        return coef, intercept, n_iter, gn, gap, loss, (hs, hy, float(lambdas[-1]))

    def objective(self, lambdas, coef, loss):
        """``(m,)`` float64: the objective (mean loss plus penalty) of the internal ``coef``."""
        return loss.double() + 0.5 * lambdas * coef.double().square().sum((1, 2)).cpu()

    def fold(self, coef: torch.Tensor, intercept: torch.Tensor):
        """Internal ``(D, K)``, ``(K,)`` → raw-feature float64 numpy ``coef_`` (K, D), ``intercept_``."""
        W = coef.double().cpu()
        if self.in_eigenbasis:
            W = self.eigvecs.double().cpu() @ W
        W = W / self.scale.double().cpu()[:, None]
        b = intercept.double().cpu() - self.center.double().cpu() @ W
        if self.k > 1:
            b = b - b.mean()  # the softmax is blind to a common shift; centre as scikit-learn's
        return W.T.numpy().copy(), b.numpy().copy()
