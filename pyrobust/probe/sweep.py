"""Whole-grid sweeps of L2-regularised logistic regression (scikit-learn's objective).

``probe_sweep`` solves every C of a grid on cached features, from strong to weak
regularisation, each solve warm-started from the previous solution, with the solver loop in C++
(``torch.ops.pyrobust.probe_solve``): L-BFGS preconditioned by ``(a S + lambda I)^-1`` where S is
the covariance of the (centred, optionally standardised) features, computed once per sweep and
shared by every C through its eigendecomposition, and ``a`` the current mean curvature of the loss
(Boehning's bound ``1/2 (I - 11'/K) (x) S`` made tighter with the probabilities at hand); line
search on cached ``X @ direction`` (no product with X inside the line search).

Why this method (measured on this 2-core CPU, N=20,000, D=512, K=100, 8 C in logspace(-4, 2),
``benchmarks/bench_probe.py``; cost in gradient-equivalents, one = X@W + X^T@G, 54 ms):
- the L-BFGS pairs are carried from one C to the next: the penalty's curvature is lambda I, so
  moving a pair to the new lambda is exact (y += delta_lambda * s), and the first step at the new C
  is a quasi-Newton predictor along the path instead of a preconditioned gradient step;
- memory 30 pairs: 144 iterations for the sweep, against 181 with 20, 293 with 10 and 137 with 50
  (whose two-loop recursion then costs more than the iterations it saves);
- line search accepting |phi'(t)| <= 0.9 |phi'(0)|: 142 iterations, against 209 for a near-exact
  search (0.1) with the same memory 10;
- the softmax kernels take their exponentials from a polynomial that GCC vectorises (AVX2 clone
  picked at load time): a fused pass over the (20,000, 100) logits went from 26 ms to 7 ms;
- stopping: the max-abs gradient <= tol (scikit-learn's ``gtol``) *and* the estimated objective
  gap g' M g / 2 <= tol (M the preconditioner). The gradient test alone stops a warm start at weak
  regularisation after 0 iterations: the new C's gradient (lambda_new - lambda_old) W is tiny while
  the optimum is far along directions the data barely curves (C = 13.9 and 100 returned C = 1.93's
  head). With the gap test every C is within 0.25 pp val accuracy of a tol=1e-5 solution.
- Solving several C jointly (``joint=m``) stacks them as one (D, m*K) GEMM: the same flops, but one
  pass over X per step for all m, which matters when X streams from disk or host memory (memory
  maps, ``device="cuda"`` with host features); on an in-memory CPU sweep warm starts win, so the
  default is ``joint=1``.
- On a GPU, float16 / bfloat16 features stay as stored and are multiplied on tensor cores: the
  float32 operand (coefficients, or per-sample gradients) is split into 2 (float16: ~23 of its
  24 significand bits) or 3 (bfloat16: all 24) half-precision parts, each product accumulated in
  float32 (``probe_solve(..., products="split")``). At ImageNet size (1.28M x 2048, K = 1000) a
  float32 product over converted X is ~5.2 TFLOP at ~67 TFLOPS (H200, no TF32), ~80 ms, against
  ~7 ms per float16 part; the validation set is scored on the device. Tested against the
  float32 products on a CPU (emulated); its speed is not yet measured on a GPU.
Result: 144 iterations, 12.3 s, 226 gradient-equivalents (about 1.5 per iteration: the two GEMMs,
one or two fused passes, the preconditioner), against 1,570 for scikit-learn's cold sweep in
REFERENCES.md; see the closing notes of issue 3 for the in-process comparison.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from pyrobust.probe import data as _data

__all__ = ["probe_sweep", "SweepResult"]

DEFAULT_CS = tuple(np.logspace(-4, 2, 8))


class _Problem:
    """Validated training data and the statistics shared by every C."""

    def __init__(self, X, y, *, sample_weight=None, class_weight=None, standardize="none",
                 device="cpu", compute_dtype=torch.float32, chunk_rows=None):
        self.X = _data.as_feature_tensor(X, "X")
        self.classes, codes = _data.encode_labels(y, "y")
        n = self.X.shape[0]
        if codes.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has {codes.shape[0]} labels")
        if len(self.classes) < 2:
            raise ValueError(f"need at least 2 classes in y, got {len(self.classes)} class: "
                             f"{self.classes.tolist()}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch.cuda.is_available() is False")
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
            cw = np.array([float(class_weight.get(c, 1.0)) for c in self.classes])
            weights = _data.sample_weights(codes, len(self.classes), sample_weight) * cw[codes]
        else:
            weights = _data.sample_weights(codes, len(self.classes), sample_weight, class_weight)
        if not weights.sum() > 0:
            raise ValueError("the sample weights sum to zero: nothing to fit")
        self.k = 1 if len(self.classes) == 2 else len(self.classes)
        self.wsum = float(weights.sum())
        self.target = torch.from_numpy(codes).to(self.device)
        self.weight = torch.from_numpy(weights).to(self.device, compute_dtype)
        center, scale, (vecs, vals) = _data.feature_stats(
            self.X, self.weight, standardize, self.chunk_rows or 65536, self.device, compute_dtype)
        self.center, self.scale = center, scale
        self.eigvecs, self.eigvals = vecs.to(compute_dtype), vals.to(compute_dtype)

    def zeros(self, m: int):
        d = self.X.shape[1]
        return (torch.zeros(m, d, self.k, dtype=self.dtype, device=self.device),
                torch.zeros(m, self.k, dtype=self.dtype, device=self.device))

    def lam(self, C: float) -> float:
        """The penalty ``lambda = 1 / (C * sum w)`` of the mean-loss objective."""
        return 1.0 / (C * self.wsum)

    def solve(self, Cs: Sequence[float], coef, intercept, *, tol, max_iter, history=30,
              pairs=None):
        """Solve for the m values ``Cs`` jointly from ``(coef, intercept)`` (internal model).

        ``pairs``: ``(history_s, history_y, lambda)`` from the previous solve of a path, or None.
        Returns ``(coef, intercept, n_iter, grad_norm, gap, loss, pairs)``."""
        from pyrobust.ops import probe as _ops

        lambdas = torch.tensor([self.lam(c) for c in Cs], dtype=torch.float64)
        hs, hy, hl = pairs if pairs is not None else (None, None, 0.0)
        *out, hs, hy = _ops.solve(self.X, self.target, self.weight, lambdas, coef, intercept,
                                  self.center.to(self.dtype), self.scale.to(self.dtype),
                                  self.eigvecs, self.eigvals, tol, max_iter, history,
                                  self.chunk_rows, hs, hy, hl, self.products)
        return (*out, (hs, hy, float(lambdas[-1])))

    def fold(self, coef: torch.Tensor, intercept: torch.Tensor):
        """Internal ``(D, K)``, ``(K,)`` → raw-feature float64 numpy ``coef_`` (K, D), ``intercept_``."""
        W = coef.double().cpu() / self.scale.double().cpu()[:, None]
        b = intercept.double().cpu() - self.center.double().cpu() @ W
        if self.k > 1:
            b = b - b.mean()  # the softmax is blind to a common shift; centre as scikit-learn's
        return W.T.numpy().copy(), b.numpy().copy()


def _score_chunks(X: torch.Tensor, coef: np.ndarray, intercept: np.ndarray, chunk_rows: int,
                  device, dtype):
    """Yield ``(row offset, X_chunk @ coef.T + intercept)`` on ``device`` in ``dtype``."""
    W = torch.from_numpy(np.ascontiguousarray(coef.T)).to(device, dtype)
    b = torch.from_numpy(np.asarray(intercept)).to(device, dtype)
    for r0, xc in _data.iter_chunks(X, chunk_rows, device, dtype):
        yield r0, torch.addmm(b, xc, W)


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
                 known: np.ndarray, chunk_rows: int = 65536, device="cpu", dtype=torch.float32):
    """Accuracy and mean cross-entropy of a raw-feature head on ``(X, codes)``, computed chunk by
    chunk on ``device``: only two numbers leave it, never an ``(N, K)`` score matrix.

    Args:
        X: ``(N, D)`` features, any float dtype and device.
        coef, intercept: ``(K, D)`` and ``(K,)`` (``(1, D)`` and ``(1,)`` for a binomial head).
        codes: ``(N,)`` int class codes (indices into the head's classes).
        known: ``(N,)`` bool, False for labels unseen in training: those count as wrong and are
            left out of the loss.

    Returns:
        ``(accuracy, mean loss)`` as Python floats (the loss is NaN when no label is known).
    """
    y = torch.from_numpy(np.where(known, codes, 0)).to(device)
    kn = torch.from_numpy(known).to(device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for r0, s in _score_chunks(X, coef, intercept, chunk_rows, device, dtype):
        c, l = _metric_sums(s, y[r0:r0 + s.shape[0]], kn[r0:r0 + s.shape[0]])
        correct += c
        loss_sum += l
    n_known = int(known.sum())
    return (float(correct) / len(known), float(loss_sum) / n_known if n_known else float("nan"))


@dataclasses.dataclass
class SweepResult:
    """Outcome of :func:`probe_sweep`, one entry per C (in increasing C order).

    Attributes:
        Cs: ``(n_C,)`` inverse regularisation strengths, increasing.
        val_accuracy, val_loss, train_loss: ``(n_C,)`` float64; ``train_loss`` is the mean
            (weighted) cross-entropy without the penalty; ``val_loss`` averages over validation
            samples whose label was seen in training.
        n_iter: ``(n_C,)`` solver iterations (one gradient-equivalent each).
        converged: ``(n_C,)`` bool, ``grad_norm <= tol`` and ``gap <= tol``.
        grad_norm: ``(n_C,)`` final max-abs gradient of the objective (scikit-learn's ``gtol``).
        gap: ``(n_C,)`` final estimated objective gap ``g' M g / 2``, M the solver's
            preconditioner (about the inverse Hessian).
        coefs, intercepts: per C, the raw-feature head (``coef_`` / ``intercept_`` layout).
        classes: the label values.
        best_index, best_C: highest val accuracy, ties going to the smaller C.
        best_estimator: a fitted :class:`LogisticProbe` at ``best_C`` (refit on train + val
            when ``refit=True``).
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
    best_estimator: object
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


def _check_Cs(Cs) -> np.ndarray:
    arr = np.asarray(Cs, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("Cs is empty")
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if bad.size:
        raise ValueError(f"every C should be finite and > 0, got {bad[0]}")
    return np.unique(arr)


def probe_sweep(X_train, y_train, X_val, y_val, Cs=DEFAULT_CS, *, standardize: str = "none",
                device: str = "cpu", tol: float = 1e-4, max_iter: int = 1000, refit: bool = False,
                progress: bool = True, sample_weight=None, class_weight=None, joint: int = 1,
                chunk_rows: Optional[int] = None, dtype: torch.dtype = torch.float32,
                history: int = 30) -> SweepResult:
    """Fit the L2 logistic probe for every C of a grid and score it on validation data.

    Args:
        X_train: ``(N, D)`` float16/32/64 numpy array, ``np.memmap`` or tensor.
        y_train: ``(N,)`` labels of any values (at least two distinct).
        X_val, y_val: ``(N_val, D)`` and ``(N_val,)``; labels unseen in training trigger a
            warning and count as wrong.
        Cs: inverse regularisation strengths (scikit-learn's C), solved in increasing order, each
            warm-started from the previous solution.
        standardize: ``"none"``, ``"feature"`` or ``"scalar"``; always folded into the head.
        device: ``"cpu"`` or ``"cuda"``.
        tol: stop when the max-abs gradient (scikit-learn's lbfgs ``gtol``) and the estimated
            objective gap are both ``<= tol`` (the gap test keeps a warm start at weak
            regularisation from stopping far from the optimum).
        max_iter: iteration cap per C.
        refit: refit the best C on train + val (concatenated in memory).
        progress: a tqdm bar over C.
        joint: number of consecutive C solved together in one batched GEMM.
        chunk_rows: rows per chunk of X (None: whole X when it is in memory in the compute
            dtype, 16384 otherwise).
        dtype: compute dtype (float32 default; float64 for tight references).

    Returns:
        :class:`SweepResult`.
    """
    import time

    from tqdm.auto import tqdm

    from pyrobust.probe.estimator import LogisticProbe

    start = time.perf_counter()
    Cs = _check_Cs(Cs)
    if tol <= 0 or not math.isfinite(tol):
        raise ValueError(f"tol should be finite and > 0, got {tol}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter should be >= 1, got {max_iter}")
    if int(joint) < 1:
        raise ValueError(f"joint should be >= 1, got {joint}")
    prob = _Problem(X_train, y_train, sample_weight=sample_weight, class_weight=class_weight,
                    standardize=standardize, device=device, compute_dtype=dtype,
                    chunk_rows=chunk_rows)
    Xv = _data.as_feature_tensor(X_val, "X_val")
    if Xv.shape[1] != prob.X.shape[1]:
        raise ValueError(f"X_val has {Xv.shape[1]} features, X_train has {prob.X.shape[1]}")
    if not isinstance(X_val, np.memmap):
        Xv = _data.to_device_if_fits(Xv, prob.device)  # scored once per C: moved once
    _data.check_finite(Xv, 65536, "X_val")
    yv = y_val.detach().cpu().numpy() if isinstance(y_val, torch.Tensor) else np.asarray(y_val)
    yv = yv.reshape(-1)
    if yv.shape[0] != Xv.shape[0]:
        raise ValueError(f"X_val has {Xv.shape[0]} samples but y_val has {yv.shape[0]} labels")
    known = np.isin(yv, prob.classes)
    if not known.all():
        unseen = np.unique(yv[~known])
        warnings.warn(f"{int((~known).sum())} validation samples have labels unseen in training "
                      f"({unseen[:10].tolist()}); they count as wrong and are left out of val_loss",
                      UserWarning, stacklevel=2)
    codes_v = np.searchsorted(prob.classes, np.where(known, yv, prob.classes[0]))

    n_c = len(Cs)
    out = {k: np.zeros(n_c)
           for k in ("val_accuracy", "val_loss", "train_loss", "grad_norm", "gap")}
    n_iter = np.zeros(n_c, dtype=np.int64)
    coefs, intercepts = [], []
    coef, intercept = prob.zeros(1)
    pairs = None
    bar = tqdm(total=n_c, disable=not progress, desc="probe sweep", unit="C")
    for i0 in range(0, n_c, joint):
        block = Cs[i0:i0 + joint]
        m = len(block)
        W0 = coef[-1:].expand(m, -1, -1).contiguous()
        b0 = intercept[-1:].expand(m, -1).contiguous()
        coef, intercept, it, gn, gap, loss, pairs = prob.solve(
            block, W0, b0, tol=tol, max_iter=max_iter, history=history,
            pairs=pairs)
        for j in range(m):
            i = i0 + j
            cf, ic = prob.fold(coef[j], intercept[j])
            coefs.append(cf)
            intercepts.append(ic)
            out["val_accuracy"][i], out["val_loss"][i] = head_metrics(
                Xv, cf, ic, codes_v, known, device=prob.device, dtype=prob.dtype)
            out["train_loss"][i] = float(loss[j])
            out["grad_norm"][i] = float(gn[j])
            out["gap"][i] = float(gap[j])
            n_iter[i] = int(it[j])
            bar.set_postfix(C=f"{block[j]:.3g}", val_acc=f"{out['val_accuracy'][i]:.4f}",
                            iters=n_iter[i])
            bar.update(1)
    bar.close()
    converged = (out["grad_norm"] <= tol) & (out["gap"] <= tol)
    if not converged.all():
        bad = ", ".join(f"C={c:.3g} (|g|={g:.2e}, gap={e:.2e})" for c, g, e in
                        zip(Cs[~converged], out["grad_norm"][~converged], out["gap"][~converged]))
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(f"probe_sweep did not reach tol={tol:g} at {bad}; increase max_iter, loosen "
                      f"tol, or use dtype=torch.float64 (float32 round-off floor)",
                      ConvergenceWarning, stacklevel=2)
    acc = out["val_accuracy"]
    best = int(np.flatnonzero(acc == acc.max())[0])  # Cs increase: first = strongest penalty
    est = LogisticProbe(C=float(Cs[best]), standardize=standardize, tol=tol, max_iter=max_iter,
                        device=device, class_weight=class_weight)
    if refit:
        Xt = prob.X
        Xall = torch.cat([Xt.to(torch.float32) if Xt.dtype == torch.float16 else Xt,
                          Xv.to(Xt.dtype if Xt.dtype != torch.float16 else torch.float32)])
        yall = np.concatenate([prob.classes[prob.target.cpu().numpy()], yv])
        sw = None
        if sample_weight is not None:
            sw = np.concatenate([np.asarray(sample_weight, dtype=np.float64),
                                 np.ones(len(yv))])
        est.fit(Xall, yall, sample_weight=sw)
    else:
        est._set_fitted(prob.classes, coefs[best], intercepts[best], int(n_iter[best]),
                        out["grad_norm"][best], prob.X.shape[1], out["gap"][best])
    return SweepResult(Cs=Cs, val_accuracy=acc, val_loss=out["val_loss"],
                       train_loss=out["train_loss"], n_iter=n_iter, converged=converged,
                       grad_norm=out["grad_norm"], gap=out["gap"], coefs=coefs, intercepts=intercepts,
                       classes=prob.classes, best_index=best, best_C=float(Cs[best]),
                       best_estimator=est, seconds=time.perf_counter() - start)
