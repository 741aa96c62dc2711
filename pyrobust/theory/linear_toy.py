"""The LP-FT paper's linear overparameterised setting, simulated with numpy.

Kumar et al. (ICLR 2022), section 3: a two-layer linear network ``f(x) = vᵀ B x`` with ``B ∈ R^{k×d}``
(orthonormal rows when pretrained) and head ``v ∈ R^k`` learns a target ``v*ᵀ B* x``. In-distribution (ID)
inputs lie on an ``m``-dimensional subspace ``S`` of ``R^d``; OOD inputs are isotropic. A pretrained ``B₀`` is
``ε``-close to ``B*``. The paper proves:

* fine-tuning (FT, fresh head, ``v`` and ``B`` trained jointly by gradient descent) changes ``B`` only on ``S``
  -- the gradient of ``B`` is ``v gᵀ`` with ``g`` a combination of ID inputs -- so the part of ``B₀`` outside
  ``S`` stays, now mismatched with the head and the in-``S`` part: FT's OOD error stays bounded away from 0;
* linear probing (LP, ``B = B₀`` frozen) has a larger ID error than FT when ``B₀ ≠ B*``;
* LP-FT (FT started from the LP head) barely moves ``B`` and gets both errors small, ``O(ε)``-ish.

Here: ``S`` is a uniformly random ``m``-dimensional subspace; ``B*`` has Haar-random orthonormal rows and
``v*`` uniform on the unit sphere (unit norm, because the curvature seen by ``B`` grows with ``||v||²``
and one step size must suit all seeds); ``B₀ = cos φ · B* + sin φ · W`` with ``W``'s rows orthonormal and orthogonal to ``B*``'s
(random, so mostly outside ``S``), which puts *every* principal angle between row(B₀) and row(B*) at ``φ`` and
``subspace_distance(B₀, B*) = 2 sin(φ/2) = eps`` exactly. Training data are ``n`` noiseless ID samples
``x = P_S z``, ``z ~ N(0, I_m)``; each method runs ``steps`` full-batch gradient-descent steps on the mean
squared loss ``(1/2n) Σ (vᵀBxᵢ - yᵢ)²``. Errors are population expected squared errors in closed form:
OOD (``x ~ N(0, I_d)``): ``||Bᵀv - B*ᵀv*||²``; ID (``x = P_S z``): ``||P_Sᵀ(Bᵀv - B*ᵀv*)||²``.

``REFERENCES.md`` section 4 records an independent numpy run of the same setting (d=100, k=5, m=20, n=40,
angle 0.1, 20 seeds): FT OOD error 1.50 vs LP-FT 0.012, LP ID error 1.6e-3 vs FT ≈ 0, change outside S ≈ 1e-15.
This implementation, defaults (same sizes, eps=0.1, unit-norm v*, zero FT head, 2000 steps at lr 0.3), 20 seeds,
≈ 5 s on one core: LP ID / OOD error 1.76e-3 / 1.32e-2; FT 1e-17 / 0.184; LP-FT 2e-31 / 1.12e-2 (FT / LP-FT OOD
16x); change of B outside S ≈ 5e-15. A random fresh head (``head_init_std=1``) raises FT's OOD error to 0.83
(74x), nearer the reference figure, whose FT head initialisation is not recorded. FT's OOD error stays ≈ 0.18 even
at eps=0, where LP and LP-FT are exact: the distortion comes from the fresh head, not from a bad B₀.

:func:`main` prints this implementation's figures (``python -m pyrobust.theory.linear_toy`` also works; runpy
then warns that the package had already imported the module, which is harmless).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from pyrobust.checks import check_int, check_real
from pyrobust.distortion import subspace_distance

__all__ = ["format_linear_toy", "linear_toy", "linear_toy_seeds", "plot_linear_toy"]

METHODS = ("lp", "ft", "lpft")
METRICS = ("id_error", "ood_error", "feature_distance", "change_outside_id")


def _check(d, k, m, n, eps, steps, lr, record_every, head_init_std) -> None:
    for name, value in (("d", d), ("k", k), ("m", m), ("n", n), ("steps", steps), ("record_every", record_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not k < m < d:
        raise ValueError(f"need k < m < d (head width < ID dimension < input dimension), got k={k}, m={m}, d={d}")
    try:
        check_real(eps, "eps", min=0, max=math.sqrt(2.0))
    except ValueError:
        raise ValueError(f"eps must lie in [0, sqrt(2)] (the range of subspace_distance), got {eps!r}") from None
    if k > d - k:
        raise ValueError(f"need 2k <= d to place B0 at distance eps from B*, got k={k}, d={d}")
    check_real(lr, "lr", min=0, min_open=True)
    check_real(head_init_std, "head_init_std", min=0)


def _haar_orthonormal(rng: np.random.Generator, d: int, cols: int) -> np.ndarray:
    """``(d, cols)`` with orthonormal columns, uniformly distributed (sign-corrected QR of a Gaussian)."""
    q, r = np.linalg.qr(rng.standard_normal((d, cols)))
    return q * np.sign(np.diag(r))


class _Problem:
    """One draw of the setting: S, B*, v*, B₀ and the ID training set."""

    def __init__(self, rng: np.random.Generator, d: int, k: int, m: int, n: int, eps: float):
        self.P = _haar_orthonormal(rng, d, m)  # (d, m): orthonormal basis of S
        basis = _haar_orthonormal(rng, d, 2 * k)
        self.B_star = basis[:, :k].T  # (k, d)
        v = rng.standard_normal(k)
        self.v_star = v / np.linalg.norm(v)
        phi = 2.0 * math.asin(eps / 2.0)
        self.B0 = math.cos(phi) * self.B_star + math.sin(phi) * basis[:, k:].T
        self.w_star = self.B_star.T @ self.v_star  # (d,): the target's weight vector
        self.X = rng.standard_normal((n, m)) @ self.P.T  # (n, d), rows in S
        self.y = self.X @ self.w_star

    def errors(self, v: np.ndarray, B: np.ndarray) -> tuple[float, float]:
        diff = B.T @ v - self.w_star
        return float(np.sum((self.P.T @ diff) ** 2)), float(diff @ diff)

    def train(self, v, B, *, train_B: bool, steps: int, lr: float, record_every: int):
        v = v.copy()
        B = B.copy()
        X, y, n = self.X, self.y, self.X.shape[0]
        curve = {"step": [], "ood_error": [], "id_error": []}

        def record(step):
            id_err, ood_err = self.errors(v, B)
            curve["step"].append(step)
            curve["id_error"].append(id_err)
            curve["ood_error"].append(ood_err)

        record(0)
        features = X @ B.T  # (n, k); fixed while B is frozen
        try:
            with np.errstate(over="raise", invalid="raise"):
                for step in range(1, steps + 1):
                    if train_B:
                        features = X @ B.T
                    r = (features @ v - y) / n
                    grad_v = features.T @ r
                    if train_B:
                        # d/dB of (1/2n)Σ(vᵀBx - y)² = v (Xᵀr)ᵀ: rank one, rows in the span of the ID inputs.
                        B -= lr * np.outer(v, X.T @ r)
                    v -= lr * grad_v
                    if step % record_every == 0 or step == steps:
                        record(step)
        except FloatingPointError:
            raise ValueError(f"gradient descent diverged with lr={lr} at step {step}; lower lr") from None
        return v, B, curve

    def summary(self, v, B, curve) -> dict[str, Any]:
        id_err, ood_err = self.errors(v, B)
        outside = (B - self.B0) - (B - self.B0) @ self.P @ self.P.T
        return {
            "id_error": id_err,
            "ood_error": ood_err,
            "feature_distance": subspace_distance(B, self.B_star),
            "change_outside_id": float(np.linalg.norm(outside)),
            "curve": curve,
        }


def linear_toy(
    seed: int = 0,
    d: int = 100,
    k: int = 5,
    m: int = 20,
    n: int = 40,
    eps: float = 0.1,
    steps: int = 2000,
    lr: float = 0.3,
    record_every: int = 10,
    head_init_std: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Train LP, FT and LP-FT on one draw of the linear setting and measure them.

    Args:
        seed: seeds ``numpy.random.default_rng`` for the whole draw (subspace, targets, data, head init).
        d, k, m, n: input dimension, feature width, ID-subspace dimension, ID training samples (``k < m < d``,
            ``2k <= d``; the paper's overparameterised regime also has ``n < d``).
        eps: ``subspace_distance(B₀, B*)``; the principal angles are all ``2 asin(eps/2)`` (≈ eps).
        steps: gradient steps per method; LP-FT runs ``steps`` of LP (the LP result) then ``steps`` of FT.
        lr: step size of full-batch gradient descent (same for ``v`` and ``B``).
        record_every: record the curve every this many steps.
        head_init_std: FT's fresh head is ``N(0, head_init_std²/k)`` per entry (0: zero head, as LP's start).

    Returns:
        ``{"lp"|"ft"|"lpft": {"id_error", "ood_error", "feature_distance", "change_outside_id", "curve"}}``:
        population squared errors, ``subspace_distance(B_final, B*)``, the Frobenius norm of ``B_final - B₀``
        projected onto the orthogonal complement of ``S``, and ``curve = {"step", "ood_error", "id_error"}``
        lists (LP-FT's curve covers its fine-tuning stage; its step 0 is the LP result).
    """
    _check(d, k, m, n, eps, steps, lr, record_every, head_init_std)
    check_int(seed, "seed", min=0)
    rng = np.random.default_rng(seed)
    prob = _Problem(rng, d, k, m, n, float(eps))
    zero_head = np.zeros(k)
    fresh_head = head_init_std / math.sqrt(k) * rng.standard_normal(k)
    train = dict(steps=steps, lr=lr, record_every=record_every)

    v_lp, B_lp, curve_lp = prob.train(zero_head, prob.B0, train_B=False, **train)
    out = {"lp": prob.summary(v_lp, B_lp, curve_lp)}
    out["ft"] = prob.summary(*prob.train(fresh_head, prob.B0, train_B=True, **train))
    out["lpft"] = prob.summary(*prob.train(v_lp, prob.B0, train_B=True, **train))
    return out


def linear_toy_seeds(seeds: Iterable[int] = range(20), **kw) -> dict[str, Any]:
    """Run :func:`linear_toy` for each seed and aggregate.

    Returns:
        ``{"seeds": [...], "seconds": float, "lp"|"ft"|"lpft": {metric: {"mean", "std", "values"}, "curve":
        {"step", "ood_error", "ood_error_min", "ood_error_max", "id_error"}}}`` where curve errors are means
        over seeds (min / max give the spread) and ``std`` is the population standard deviation.
    """
    seeds = [check_int(s, "seeds (each)", min=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    start = time.perf_counter()
    runs = [linear_toy(seed=s, **kw) for s in seeds]
    out: dict[str, Any] = {"seeds": seeds, "seconds": time.perf_counter() - start}
    for method in METHODS:
        agg: dict[str, Any] = {}
        for metric in METRICS:
            values = np.array([r[method][metric] for r in runs])
            agg[metric] = {"mean": float(values.mean()), "std": float(values.std()), "values": values.tolist()}
        ood = np.array([r[method]["curve"]["ood_error"] for r in runs])
        agg["curve"] = {
            "step": list(runs[0][method]["curve"]["step"]),
            "ood_error": ood.mean(0).tolist(),
            "ood_error_min": ood.min(0).tolist(),
            "ood_error_max": ood.max(0).tolist(),
            "id_error": np.mean([r[method]["curve"]["id_error"] for r in runs], axis=0).tolist(),
        }
        out[method] = agg
    return out


def format_linear_toy(summary: dict[str, Any]) -> str:
    """A plain-text table of a :func:`linear_toy_seeds` result (mean ± std over seeds)."""
    if not isinstance(summary, dict) or not all(isinstance(summary.get(m), dict) for m in METHODS) \
            or "seeds" not in summary:
        raise ValueError("summary should be a linear_toy_seeds(...) result (keys 'seeds', 'lp', 'ft', 'lpft')")
    lines = [f"{'method':<6}" + "".join(f"{metric:>28}" for metric in METRICS)]
    for method in METHODS:
        cells = (f"{summary[method][m]['mean']:.3e} ± {summary[method][m]['std']:.1e}" for m in METRICS)
        lines.append(f"{method:<6}" + "".join(f"{c:>28}" for c in cells))
    ratio = summary["ft"]["ood_error"]["mean"] / max(summary["lpft"]["ood_error"]["mean"], 1e-300)
    lines.append(f"FT / LP-FT OOD error: {ratio:.1f}x  ({len(summary['seeds'])} seeds, {summary['seconds']:.2f} s)")
    return "\n".join(lines)


def plot_linear_toy(result: dict[str, Any], path: str | Path) -> Path:
    """Plot OOD error against training steps for LP, FT and LP-FT (log-scale y) and save it to ``path``.

    ``result`` is a :func:`linear_toy` or :func:`linear_toy_seeds` result (the latter adds a min-max band).
    Uses matplotlib's Agg canvas directly, so the global pyplot backend is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = {"lp": "LP", "ft": "FT", "lpft": "LP-FT (fine-tuning stage)"}
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    floor = np.finfo(np.float64).tiny  # zero errors would vanish from a log axis
    for method in METHODS:
        if method not in result:
            raise ValueError(f"result lacks method {method!r}; pass linear_toy(...) or linear_toy_seeds(...) output")
        curve = result[method]["curve"]
        (line,) = ax.plot(curve["step"], np.maximum(curve["ood_error"], floor), label=labels[method])
        if "ood_error_min" in curve:
            ax.fill_between(curve["step"], np.maximum(curve["ood_error_min"], floor), curve["ood_error_max"],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("OOD error  ||Bᵀv − B*ᵀv*||²")
    title = "linear toy: OOD error"
    if "seeds" in result:
        title += f" ({len(result['seeds'])} seeds: mean, min-max band)"
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def main(argv: Optional[list[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--plot", type=Path, default=None, help="save the OOD-error curves to this file")
    args = parser.parse_args(argv)
    summary = linear_toy_seeds(range(args.seeds), eps=args.eps, steps=args.steps, lr=args.lr)
    print(format_linear_toy(summary))
    if args.plot is not None:
        print(f"plot: {plot_linear_toy(summary, args.plot)}")


if __name__ == "__main__":
    main()
