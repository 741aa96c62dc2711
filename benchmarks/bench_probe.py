"""Linear-probe sweep benchmark: pyrobust beside scikit-learn and torch.optim.LBFGS, one process.

Same synthetic features (non-negative, ReLU-like, correlated, shaped like pooled network features;
best val accuracy about 35-40 % at the default size), same C grid, for:
- pyrobust ``probe_sweep`` (warm-started path, C++ solver, float32);
- scikit-learn ``LogisticRegression(solver="lbfgs", max_iter=1000)`` cold fits, one per C;
- scikit-learn warm-started path (``warm_start=True``, strong -> weak C, as the LP-FT authors);
- ``torch.optim.LBFGS`` (strong Wolfe) on the same objective, warm-started path.
Cost is also given in gradient-equivalents: seconds / seconds of one gradient (X@W and X^T@G in
float32). Target: >= 20x faster than the cold scikit-learn sweep, val accuracy within
0.5 pp at every C and the same best C.

    python benchmarks/bench_probe.py                 # 20000 x 512, K=100, 8 C
    python benchmarks/bench_probe.py --skip-slow     # pyrobust and the gradient cost only
    PYTHONPATH=. python benchmarks/bench_probe.py --suite --quick   # the problem suite
    python benchmarks/bench_probe.py --device cuda --n 1281167 --d 2048 --k 1000 --n-c 45 \
        --half --skip-slow                           # ImageNet-sized GPU sweep
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
import torch.utils.benchmark as benchmark

from probe_problems import make_features  # noqa: F401  (also this module's name for it)


def make_features_on(device: str, n: int, d: int, k: int, seed: int = 0, latent: int = 48,
                     noise: float = 2.9, dtype=torch.float32):
    """``make_features``' model drawn with torch on ``device`` (seconds at ImageNet size on a GPU,
    where numpy takes minutes); the same distribution, not the same draws."""
    g = torch.Generator(device=device).manual_seed(seed)
    means = torch.randn(k, latent, generator=g, device=device)
    proj = torch.randn(latent, d, generator=g, device=device) / latent ** 0.5
    y = torch.randint(0, k, (n,), generator=g, device=device)
    X = torch.empty(n, d, dtype=dtype, device=device)
    for r0 in range(0, n, 65536):
        yy = y[r0:r0 + 65536]
        h = means[yy] + noise * torch.randn(len(yy), latent, generator=g, device=device)
        x = h @ proj + 0.5 * torch.randn(len(yy), d, generator=g, device=device) + 0.3
        X[r0:r0 + 65536] = x.clamp_min_(0)
    return X, y.cpu().numpy()


def gradient_seconds(X: torch.Tensor, k: int, device: str, repeat: int = 3) -> float:
    """Seconds of one gradient's products X @ W and X^T @ G in float32, the faster of two ways: as
    written, and with W padded to 16 columns and X^T G taken as (G^T X)^T, which MKL runs several
    times faster for 2-15 columns (docs/probe-solver.md, "Skinny products")."""
    X = X.to(device, torch.float32)
    W = torch.randn(X.shape[1], k, device=device) * 0.01
    W16 = torch.nn.functional.pad(W, (0, max(16 - k, 0)))
    best = []
    for stmt in ("X.T @ (X @ W)", "((X @ W16)[:, :k].T @ X).T"):
        timer = benchmark.Timer(stmt=stmt, globals={"X": X, "W": W, "W16": W16, "k": k},
                                num_threads=torch.get_num_threads())
        best.append(min(timer.timeit(1).median for _ in range(repeat)))
    return min(best)


def sklearn_sweep(Xt, yt, Xv, yv, Cs, warm: bool):
    """``(val accuracies, iterations, seconds, heads)`` of scikit-learn's lbfgs over ``Cs``: cold
    fits, or one warm-started path (``warm``); ``heads``: ``(coef_, intercept_)`` per C."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    accs, iters, heads = [], [], []
    clf = LogisticRegression(max_iter=1000, warm_start=warm)
    t0 = time.perf_counter()
    for C in Cs:
        if not warm:
            clf = LogisticRegression(max_iter=1000)
        clf.set_params(C=C)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xt, yt)
        accs.append(clf.score(Xv, yv))
        iters.append(int(clf.n_iter_[0]))
        heads.append((clf.coef_.copy(), clf.intercept_.copy()))
    return np.array(accs), iters, time.perf_counter() - t0, heads


def torch_lbfgs_sweep(Xt, yt, Xv, yv, Cs, tol=1e-4, max_iter=1000):
    X = torch.from_numpy(Xt).float()
    y = torch.from_numpy(yt).long()
    xv = torch.from_numpy(Xv).float()
    k = int(y.max()) + 1
    W = torch.zeros(X.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    accs = []
    t0 = time.perf_counter()
    for C in Cs:
        lam = 1.0 / (C * X.shape[0])
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                tolerance_change=1e-12, history_size=10,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(X @ W + b, y) + 0.5 * lam * (W * W).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            accs.append(float(((xv @ W + b).argmax(1).numpy() == yv).mean()))
    return np.array(accs), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="training samples")
    ap.add_argument("--n-val", type=int, default=None, help="validation samples (default n/4)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--n-c", type=int, default=8, help="grid size")
    ap.add_argument("--c-min", type=float, default=-4, help="log10 of the smallest C")
    ap.add_argument("--c-max", type=float, default=2, help="log10 of the largest C")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true", help="features stored as float16")
    ap.add_argument("--joint", type=int, default=1, help="C values solved per batched GEMM")
    ap.add_argument("--skip-slow", action="store_true", help="skip scikit-learn and torch LBFGS")
    ap.add_argument("--progress", action="store_true", help="pyrobust's progress bar over C")
    ap.add_argument("--skip-torch", action="store_true", help="skip torch.optim.LBFGS")
    ap.add_argument("--skip-warm", action="store_true", help="skip the warm-started sklearn path")
    ap.add_argument("--suite", action="store_true",
                    help="the problem suite (probe_suite.py) instead of one problem")
    ap.add_argument("--quick", action="store_true", help="with --suite: the quick subset")
    ap.add_argument("--only", help="with --suite: problems whose name contains this")
    args = ap.parse_args(argv)
    if args.suite:
        from probe_suite import run_suite

        return run_suite(args.quick, args.only)

    from pyrobust.probe import probe_sweep

    n_val = args.n_val or args.n // 4
    if args.device.startswith("cuda") and args.skip_slow:  # no CPU incumbent needs numpy data
        X, y = make_features_on(args.device, args.n + n_val, args.d, args.k,
                                dtype=torch.float16 if args.half else torch.float32)
    else:
        X, y = make_features(args.n + n_val, args.d, args.k,
                             dtype=np.float16 if args.half else np.float32)
    Xt, yt, Xv, yv = X[:args.n], y[:args.n], X[args.n:], y[args.n:]
    Cs = np.logspace(args.c_min, args.c_max, args.n_c)
    print(f"N={args.n} N_val={n_val} D={args.d} K={args.k} C grid logspace({args.c_min:g}, "
          f"{args.c_max:g}, {args.n_c}) device={args.device} threads={torch.get_num_threads()}")
    g = gradient_seconds(torch.as_tensor(Xt[: min(args.n, 200000)]), args.k, args.device)
    g *= args.n / min(args.n, 200000)
    print(f"one gradient (X@W + X^T@G, float32): {g * 1e3:.1f} ms")

    res = probe_sweep(Xt, yt, Xv, yv, Cs, device=args.device, progress=args.progress,
                      joint=args.joint)
    t_ours = res.seconds
    rows = {"pyrobust": (res.val_accuracy, t_ours)}
    iters = {"pyrobust": list(res.n_iter)}
    if not args.skip_slow:
        acc, it, t, _ = sklearn_sweep(Xt, yt, Xv, yv, Cs, warm=False)
        rows["sklearn cold"] = (acc, t)
        iters["sklearn cold"] = it
        if not args.skip_warm:
            acc, it, t, _ = sklearn_sweep(Xt, yt, Xv, yv, Cs, warm=True)
            rows["sklearn warm"] = (acc, t)
            iters["sklearn warm"] = it
        if not args.skip_torch:
            acc, t = torch_lbfgs_sweep(Xt, yt, Xv, yv, Cs)
            rows["torch LBFGS"] = (acc, t)

    names = list(rows)
    print("\nval accuracy per C (iterations)")
    print(f"{'C':>10} " + " ".join(f"{nm:>20}" for nm in names))
    for i, C in enumerate(Cs):
        cells = []
        for nm in names:
            it = f" ({iters[nm][i]})" if nm in iters else ""
            cells.append(f"{rows[nm][0][i]:.4f}{it}".rjust(20))
        print(f"{C:10.3g} " + " ".join(cells))
    print(f"\n{'':>14} {'seconds':>9} {'grad-eq':>8} {'best C':>9} {'best acc':>9} {'vs pyrobust':>12}")
    for nm in names:
        acc, t = rows[nm]
        b = int(np.flatnonzero(acc == acc.max())[0])
        print(f"{nm:>14} {t:9.2f} {t / g:8.1f} {Cs[b]:9.3g} {acc[b]:9.4f} {t / t_ours:11.1f}x")
    if "sklearn cold" in rows:
        gap = np.abs(rows["sklearn cold"][0] - res.val_accuracy).max() * 100
        print(f"\nmax |val acc pyrobust - sklearn cold| over C: {gap:.2f} pp; "
              f"solver iterations pyrobust {int(res.n_iter.sum())}, "
              f"sklearn cold {sum(iters['sklearn cold'])}")
    print(f"pyrobust converged at every C: {bool(res.converged.all())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
