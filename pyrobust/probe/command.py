"""``pyrobust probe``: sweep C for a linear probe on saved features.

Features come from ``.npy`` (``--train-y`` gives the labels file), ``.npz`` or safetensors (arrays
``X``/``features`` and ``y``/``labels``). Validation data come from ``--val`` or a split fraction
(``--val-fraction``, a seeded shuffle). Prints the per-C table, saves the best head as safetensors
(``weight`` (K, D), ``bias`` (K,), ``classes``) and a PNG of the regularisation path.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

_X_KEYS = ("X", "features", "x")
_Y_KEYS = ("y", "labels", "targets")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``probe`` subcommand's options on ``parser``."""
    parser.add_argument("train", help="training features: .npy, .npz or .safetensors")
    parser.add_argument("--train-y", help="training labels (.npy) when `train` is a .npy")
    parser.add_argument("--val", help="validation features (same formats)")
    parser.add_argument("--val-y", help="validation labels (.npy) when `--val` is a .npy")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="held-out fraction of train when --val is not given (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    parser.add_argument("--c-min", type=float, default=-4, help="log10 of the smallest C")
    parser.add_argument("--c-max", type=float, default=2, help="log10 of the largest C")
    parser.add_argument("--n-c", type=int, default=8, help="number of C values")
    parser.add_argument("--standardize", choices=["none", "feature", "scalar"], default="none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--refit", action="store_true", help="refit the best C on train + val")
    parser.add_argument("--out", default="probe_out", help="output folder (head, plot)")
    parser.add_argument("--no-progress", action="store_true")


def _load(path: str, y_path=None, what="train"):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        X = np.load(path, mmap_mode="r")
        if y_path is None:
            raise ValueError(f"{what} features are a .npy file: give its labels with "
                             f"--{what}-y labels.npy")
        return X, np.load(y_path)
    if ext == ".npz":
        arrays = np.load(path)
    elif ext == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(path)
    else:
        raise ValueError(f"{path}: expected .npy, .npz or .safetensors, got {ext!r}")
    xk = next((k for k in _X_KEYS if k in arrays), None)
    yk = next((k for k in _Y_KEYS if k in arrays), None)
    if xk is None or yk is None:
        raise ValueError(f"{path} should hold features under one of {_X_KEYS} and labels under "
                         f"one of {_Y_KEYS}; found {sorted(arrays.keys())}")
    return arrays[xk], arrays[yk]


def plot_path(result, path: str) -> None:
    """PNG of train/val accuracy and loss against C (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogx(result.Cs, result.val_accuracy, "o-", label="val")
    if getattr(result, "train_accuracy", None) is not None:
        ax1.semilogx(result.Cs, result.train_accuracy, "s--", label="train")
    ax1.axvline(result.best_C, color="grey", ls=":")
    ax1.set_xlabel("C")
    ax1.set_ylabel("accuracy")
    ax1.legend()
    ax2.semilogx(result.Cs, result.val_loss, "o-", label="val")
    ax2.semilogx(result.Cs, result.train_loss, "s--", label="train")
    ax2.set_xlabel("C")
    ax2.set_ylabel("cross-entropy")
    ax2.legend()
    fig.suptitle(f"regularisation path (best C = {result.best_C:.3g})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run the sweep; returns the process exit code."""
    from safetensors.numpy import save_file

    from pyrobust.probe import probe_sweep
    from pyrobust.probe.scoring import head_metrics
    from pyrobust.probe import data as _data

    X, y = _load(args.train, args.train_y, "train")
    if args.val:
        Xv, yv = _load(args.val, args.val_y, "val")
    else:
        if not 0 < args.val_fraction < 1:
            raise ValueError(f"--val-fraction should be in (0, 1), got {args.val_fraction}")
        perm = np.random.default_rng(args.seed).permutation(len(y))
        n_val = max(1, int(round(args.val_fraction * len(y))))
        vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        X, Xv, yv, y = X[ti], X[vi], y[vi], y[ti]
    Cs = np.logspace(args.c_min, args.c_max, args.n_c)
    res = probe_sweep(X, y, Xv, yv, Cs, standardize=args.standardize, device=args.device,
                      tol=args.tol, max_iter=args.max_iter, refit=args.refit,
                      progress=not args.no_progress)
    Xt = _data.as_feature_tensor(X)
    codes = np.searchsorted(res.classes, y)
    res.train_accuracy = np.array([
        head_metrics(Xt, c, b, codes, np.ones(len(y), bool), device=args.device)[0]
        for c, b in zip(res.coefs, res.intercepts)])
    print(res.table())
    os.makedirs(args.out, exist_ok=True)
    est = res.best_estimator
    classes = np.asarray(res.classes)
    tensors = {"weight": est.coef_.astype(np.float32), "bias": est.intercept_.astype(np.float32)}
    meta = {"best_C": f"{res.best_C:.6g}", "standardize": args.standardize}
    if np.issubdtype(classes.dtype, np.number):
        tensors["classes"] = classes.astype(np.int64 if np.issubdtype(classes.dtype, np.integer)
                                            else np.float64)
    else:
        meta["classes"] = "\n".join(map(str, classes))
    head = os.path.join(args.out, "probe_head.safetensors")
    save_file(tensors, head, metadata=meta)
    plot = os.path.join(args.out, "probe_path.png")
    plot_path(res, plot)
    print(f"best C = {res.best_C:.4g} (val accuracy {res.val_accuracy[res.best_index]:.4f}); "
          f"head: {head}; plot: {plot}")
    if not res.converged.all():
        print("warning: some C did not converge (see the table)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyrobust probe", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
