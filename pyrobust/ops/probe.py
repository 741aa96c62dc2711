"""Typed wrappers over the probe ops (``torch.ops.pyrobust.probe_*``) with their fake kernels.

Layout: logits are ``(N, m, K)`` for ``m`` values of C solved jointly; ``K == 1`` is the binomial
(sigmoid) model, ``K >= 2`` the multinomial (softmax) one. See ``csrc/ops/probe.cpp``.
"""

from __future__ import annotations

import torch

from pyrobust.checks import check_int, check_real
from pyrobust.ops import _checks
from pyrobust.ops import _library  # noqa: F401  (loads the compiled core)

__all__ = ["loss_grad", "line_stats", "solve"]


def loss_grad(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *,
              check_target: bool = True):
    """Fused softmax/sigmoid cross-entropy and its gradient with respect to the logits.

    Args:
        logits: ``(N, m, K)`` float32/float64, ``K >= 1``.
        target: ``(N,)`` int64 class indices (``{0, 1}`` when ``K == 1``).
        weight: ``(N,)`` per-sample weights, dtype of ``logits``.
        check_target: check that every target is a class of the model (a ValueError otherwise;
            one device sync for CUDA targets). With ``False`` a bad target gives NaN for its row.

    Returns:
        ``grad`` ``(N, m, K)`` = ``weight * (p - onehot)`` and ``stats`` ``(m, 2)`` float64:
        weighted sums of the loss and of the mean per-sample curvature.
    """
    return torch.ops.pyrobust.probe_loss_grad(logits, target, weight, check_target=check_target)


def line_stats(
    logits: torch.Tensor,
    direction: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    step: torch.Tensor,
    *,
    check_target: bool = True,
) -> torch.Tensor:
    """``(m, 5)`` float64 at ``logits + step[c] * direction`` (``step`` is ``(m,)`` float64, on the
    logits' device or the CPU): the weighted loss sum, its first two derivatives in ``t``, its
    change from ``t = 0`` and the sum of the rows' absolute changes. The change is computed as a
    difference (exact to its own precision where subtracting two float32 loss sums would lose it
    to round-off). ``check_target`` as in :func:`loss_grad`."""
    return torch.ops.pyrobust.probe_line_stats(logits, direction, target, weight, step,
                                               check_target=check_target)


def solve(
    X: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    lambdas: torch.Tensor,
    coef: torch.Tensor,
    intercept: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    eigvecs: torch.Tensor,
    eigvals: torch.Tensor,
    tol: float,
    max_iter: int,
    history: int = 30,
    chunk_rows: int = 0,
    history_s: torch.Tensor | None = None,
    history_y: torch.Tensor | None = None,
    history_lambda: float = 0.0,
    products: str = "convert",
    group_name: str | None = None,
    gap_rtol: float = 0.0,
):
    """Run the solver loop for ``m`` L2 strengths ``lambdas`` from the start ``(coef, intercept)``.

    ``X`` ``(N, D)`` any float dtype and device (read in chunks of ``chunk_rows``, 0 = all);
    ``coef`` ``(m, D, K)`` and ``intercept`` ``(m, K)`` in the compute dtype on the compute device,
    in the internal model on ``(x - center) / scale``; ``eigvecs`` ``(D, D)``, ``eigvals`` ``(D,)``
    the eigendecomposition of the weighted covariance of those features. ``eigvecs`` empty
    ``(0, 0)``: ``X`` is given in that eigenbasis (``(x - center) / scale @ eigvecs``, with
    ``center`` 0 and ``scale`` 1), and so are ``coef`` and the returned coefficients.

    ``history_s``/``history_y`` ``(h, D + 1, K)`` (the intercept in row D) are L-BFGS pairs from
    the previous C of a path, as this op returned them (coefficients in the eigenbasis
    ``eigvecs^T W``), their ``y`` taken at ``history_lambda``; the solver moves them to each
    of its ``lambdas`` exactly (the penalty's curvature is ``lambda I``) and starts from them.

    Stops for each C once ``grad_norm <= tol``, ``gap <= tol`` and, where ``gap_rtol > 0``,
    ``gap <= gap_rtol * objective`` (the objective at the iterate: mean loss plus penalty).

    ``products``: ``"convert"`` multiplies chunks of ``X`` converted to the compute dtype;
    ``"split"`` (float16 / bfloat16 ``X``, float32 compute) multiplies ``X`` as stored, the float32
    operand split into 2 (float16: ~23 significand bits) or 3 (bfloat16: all 24) parts, each
    product in float32 accumulation (tensor cores on CUDA; emulated on a CPU).

    Returns ``(coef, intercept, n_iter (m,) int64, grad_norm (m,) float64, gap (m,) float64,
    loss (m,) float64, history_s, history_y)``: ``grad_norm`` the max-abs gradient, ``gap`` the
    estimated objective gap ``g' M g / 2`` (M the preconditioner), ``loss`` the mean weighted
    cross-entropy, the last two the final pairs of the last C, packed as above.

    ``group_name``: the name of a ``torch.distributed`` group (``group.group_name``) whose ranks
    each pass their own rows of ``X``, ``target`` and ``weight`` and the same everything else: the
    sums over rows are all-reduced over it, and every rank returns the solve on all the rows.

    The settings are checked here (types, ``chunk_rows >= 0``, a finite ``scale > 0``: one sync for
    a device ``scale``, once per call, never inside the solver loop).
    """
    tol = check_real(tol, "tol", min=0)
    gap_rtol = check_real(gap_rtol, "gap_rtol", min=0)
    max_iter, history = check_int(max_iter, "max_iter", min=0), check_int(history, "history", min=1)
    chunk_rows = check_int(chunk_rows, "chunk_rows", min=0)
    if scale.device.type != "meta" and scale.numel() and not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("scale should hold finite values > 0 (each feature is divided by it)")
    return torch.ops.pyrobust.probe_solve(
        X, target, weight, lambdas, coef, intercept, center, scale, eigvecs, eigvals,
        float(tol), int(max_iter), int(history), int(chunk_rows), history_s, history_y,
        float(history_lambda), products, group_name, float(gap_rtol),
    )


@torch.library.register_fake("pyrobust::probe_loss_grad")
def _loss_grad_fake(logits, target, weight, *, check_target=True):
    _checks.check_probe_logits(logits, target, weight)
    return torch.empty_like(logits), logits.new_empty((logits.shape[1], 2), dtype=torch.float64)


@torch.library.register_fake("pyrobust::probe_line_stats")
def _line_stats_fake(logits, direction, target, weight, step, *, check_target=True):
    _checks.check_probe_line(logits, direction, target, weight, step)
    return logits.new_empty((logits.shape[1], 5), dtype=torch.float64)


@torch.library.register_fake("pyrobust::probe_solve")
def _solve_fake(X, target, weight, lambdas, coef, intercept, center, scale, eigvecs, eigvals,
                tol, max_iter, history, chunk_rows, history_s=None, history_y=None,
                history_lambda=0.0, products="convert", group_name=None, gap_rtol=0.0):
    _checks.check_probe_solve(X, target, weight, lambdas, coef, intercept, center, scale, eigvecs, eigvals, tol,
                              max_iter, history, chunk_rows, history_s, history_y, products)
    m, d, k = coef.shape
    cpu = torch.device("cpu")
    h = torch.library.get_ctx().new_dynamic_size()
    return (
        torch.empty_like(coef),
        torch.empty_like(intercept),
        torch.empty((m,), dtype=torch.int64, device=cpu),
        torch.empty((m,), dtype=torch.float64, device=cpu),
        torch.empty((m,), dtype=torch.float64, device=cpu),
        torch.empty((m,), dtype=torch.float64, device=cpu),
        coef.new_empty((h, d + 1, k)),
        coef.new_empty((h, d + 1, k)),
    )
