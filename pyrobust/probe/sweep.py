"""``probe_sweep``: scikit-learn's L2 logistic regression solved for a whole grid of C.

Every C of the grid is solved on the same cached features, from strong to weak regularisation,
each solve warm-started from the previous one (its solution and its L-BFGS pairs), by
``torch.ops.pyrobust.probe_solve``: L-BFGS preconditioned by the feature covariance, shared by
every C. ``docs/probe-solver.md`` says what the solver does and the measurements behind each
choice.

``head_metrics``, ``decision_scores`` (``scoring.py``), ``SweepResult`` (``result.py``) and
``_Problem`` (``problem.Problem``) are importable from here too.
"""

from __future__ import annotations

import time
import warnings
from typing import Optional, Union

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from tqdm.auto import tqdm

from pyrobust.checks import check_bool, check_int, check_real
from pyrobust.probe import data as _data
from pyrobust.probe import group as _group
from pyrobust.probe.estimator import LogisticProbe
from pyrobust.probe.problem import Problem, gap_tolerance
from pyrobust.probe.result import SweepResult
from pyrobust.probe.scoring import decision_scores, head_metrics
from pyrobust.probe.scoring import _metric_sums, _score_chunks  # noqa: F401  (older import path)

_Problem = Problem  # older import path

__all__ = ["probe_sweep", "SweepResult", "DEFAULT_CS", "decision_scores", "head_metrics"]

DEFAULT_CS = tuple(np.logspace(-4, 2, 8))


def _check_Cs(Cs) -> np.ndarray:
    if Cs is None or isinstance(Cs, (str, bytes)):
        raise TypeError(f"Cs should be a sequence of numbers > 0, got {Cs!r}")
    try:
        arr = np.asarray(Cs, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"Cs should be a sequence of numbers > 0, got {Cs!r} ({exc})") from None
    if arr.size == 0:
        raise ValueError("Cs is empty")
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if bad.size:
        raise ValueError(f"every C should be finite and > 0, got {bad[0]}")
    return np.unique(arr)


def probe_sweep(X_train, y_train, X_val, y_val, Cs=DEFAULT_CS, *, standardize: str = "none",
                device: str = "cpu", tol: float = 1e-4, max_iter: int = 1000, refit: bool = False,
                progress: bool = True, sample_weight=None, class_weight=None, joint: int = 1,
                chunk_rows: Optional[int] = None,
                dtype: Union[str, torch.dtype] = torch.float32, history: int = 30,
                process_group=None) -> SweepResult:
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
        tol: stop when the max-abs gradient (scikit-learn's lbfgs ``gtol``) is ``<= tol`` and
            the estimated objective gap is ``<= tol`` and ``<= 1e-6`` of the objective (the gap
            test keeps a warm start at weak regularisation from stopping far from the optimum;
            the relative one holds the objective within 1e-4 of the optimum where it is small).
        max_iter: iteration cap per C.
        refit: refit the best C on train + val (concatenated in memory).
        progress: a tqdm bar over C.
        joint: number of consecutive C solved together in one batched GEMM.
        chunk_rows: rows per chunk of X (None: whole X when it is in memory in the compute
            dtype, 16384 otherwise).
        dtype: compute dtype, ``torch.float32`` (default) or ``torch.float64`` (tight
            references), or its name (``"float32"``, ``"float64"``) as ``LogisticProbe`` takes
            it; the best estimator is made in it too.
        history: L-BFGS pairs kept (and carried from one C to the next).
        process_group: a ``torch.distributed`` group (e.g. ``torch.distributed.group.WORLD``)
            whose ranks each pass their own rows of train and val (at least one of each; every
            other argument the same). The label set, weight sums, feature statistics, the solver's
            sums over rows and the val metrics are reduced over the group, and every rank returns
            the same result: the sweep on the concatenated rows. ``refit`` is refused with it.

    Returns:
        :class:`SweepResult`.
    """
    start = time.perf_counter()
    Cs = _check_Cs(Cs)
    tol = check_real(tol, "tol", min=0, min_open=True)
    max_iter = check_int(max_iter, "max_iter", min=1)
    joint = check_int(joint, "joint", min=1)
    history = check_int(history, "history", min=1)
    refit = check_bool(refit, "refit")
    if refit and process_group is not None:
        raise ValueError("refit=True is not supported with a process_group (it would gather train "
                         "and val on one process); refit the best C yourself")
    group = _group.check_group(process_group)

    def check_rows():
        # Validation data first: a mistake there is reported before the training statistics are
        # made. With a group, this rank's training rows too (Problem checks them again, between
        # collectives), so that every rank learns of any rank's bad input before the first one.
        Xv = _data.as_feature_tensor(X_val, "X_val")
        X = _data.as_feature_tensor(X_train, "X")
        if Xv.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {Xv.shape[1]} features, X_train has {X.shape[1]}")
        yv = _data.as_labels(y_val, "y_val")
        if yv.shape[0] != Xv.shape[0]:
            raise ValueError(f"X_val has {Xv.shape[0]} samples but y_val has {yv.shape[0]} labels")
        _data.check_finite(Xv, 65536, "X_val")
        if group is not None:
            y = _data.encode_labels(y_train, "y")[1]
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]} labels")
            _data.check_finite(X, 65536, "X")
            _data.sample_weights(y, int(y.max()) + 1, sample_weight)  # its shape and values
        return Xv, yv

    Xv, yv = _group.agree(check_rows, group)
    prob = Problem(X_train, y_train, sample_weight=sample_weight, class_weight=class_weight,
                   standardize=standardize, device=device, compute_dtype=dtype,
                   chunk_rows=chunk_rows, process_group=process_group)
    if not isinstance(X_val, np.memmap):
        Xv = _data.to_device_if_fits(Xv, prob.device)  # scored once per C: moved once
    known = np.isin(yv, prob.classes)
    if not known.all():
        unseen = np.unique(yv[~known])
        warnings.warn(f"{int((~known).sum())} validation samples have labels unseen in training "
                      f"({unseen[:10].tolist()}); they count as wrong and are left out of val_loss",
                      UserWarning, stacklevel=2)
    codes_v = np.searchsorted(prob.classes, np.where(known, yv, prob.classes[0]))

    n_c = len(Cs)
    out = {k: np.zeros(n_c)
           for k in ("val_accuracy", "val_loss", "train_loss", "grad_norm", "gap", "objective")}
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
        objective = prob.objective(torch.tensor([prob.lam(c) for c in block], dtype=torch.float64),
                                   coef, loss)
        for j in range(m):
            i = i0 + j
            cf, ic = prob.fold(coef[j], intercept[j])
            coefs.append(cf)
            intercepts.append(ic)
            out["val_accuracy"][i], out["val_loss"][i] = head_metrics(
                Xv, cf, ic, codes_v, known, device=prob.device, dtype=prob.dtype,
                group=prob.group)
            out["train_loss"][i] = float(loss[j])
            out["grad_norm"][i] = float(gn[j])
            out["gap"][i] = float(gap[j])
            out["objective"][i] = float(objective[j])
            n_iter[i] = int(it[j])
            bar.set_postfix(C=f"{block[j]:.3g}", val_acc=f"{out['val_accuracy'][i]:.4f}",
                            iters=n_iter[i])
            bar.update(1)
    bar.close()
    converged = (out["grad_norm"] <= tol) & (out["gap"] <= gap_tolerance(tol, out["objective"]))
    if not converged.all():
        bad = ", ".join(f"C={c:.3g} (|g|={g:.2e}, gap={e:.2e})" for c, g, e in
                        zip(Cs[~converged], out["grad_norm"][~converged], out["gap"][~converged]))
        warnings.warn(f"probe_sweep did not reach tol={tol:g} at {bad}; increase max_iter, loosen "
                      f"tol, or use dtype=torch.float64 (float32 round-off floor)",
                      ConvergenceWarning, stacklevel=2)
    acc = out["val_accuracy"]
    best = int(np.flatnonzero(acc == acc.max())[0])  # Cs increase: first = strongest penalty
    est = LogisticProbe(C=float(Cs[best]), standardize=standardize, tol=tol, max_iter=max_iter,
                        device=device, class_weight=class_weight, dtype=dtype)
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
