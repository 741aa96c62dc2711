"""``pyrobust probe``: sweep C for a linear probe on saved features.

Features come from ``.npy`` (``--train-y`` gives the labels file), ``.npz`` or safetensors (arrays
``X``/``features`` and ``y``/``labels``). Validation data come from ``--val`` or a split fraction
(``--val-fraction``, a seeded shuffle). Prints the per-C table, saves the best head as safetensors
(``weight`` (K, D), ``bias`` (K,), ``classes``) and a PNG of the regularisation path.

``--cache DIR`` sweeps a ``pyrobust extract`` cache instead (val rows from ``--val-cache DIR`` or
the seeded fraction). Under ``torchrun`` each rank reads only its own chunks (those it wrote when
extracting with as many ranks) and the sweep is reduced over the ranks (gloo on the CPU, nccl on
CUDA): no process holds the whole cache. Rank 0 prints and writes the outputs.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from pyrobust.checks import check_int, check_real
from pyrobust.errors import UsageError, check_out_folder
from pyrobust.probe import data as _data
from pyrobust.probe.data import as_compute_device

_X_KEYS = ("X", "features", "x")
_Y_KEYS = ("y", "labels", "targets")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``probe`` subcommand's options on ``parser``."""
    parser.add_argument("train", nargs="?", help="training features: .npy, .npz or .safetensors "
                        "(or give --cache)")
    parser.add_argument("--cache", help="training features: a `pyrobust extract` cache folder, read "
                        "by every torchrun rank its own chunks")
    parser.add_argument("--val-cache", help="validation features: a `pyrobust extract` cache folder "
                        "(with --cache)")
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


def _open(path: str, what: str):
    """The arrays of one features file (``{name: array}``), or :class:`UsageError` naming the file."""
    if not os.path.isfile(path):
        why = "is a folder" if os.path.isdir(path) else "does not exist"
        raise UsageError(f"{what} file {path!r} {why}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz", ".safetensors"):
        raise UsageError(f"{what} file {path!r}: expected .npy, .npz or .safetensors, got {ext!r}")
    try:
        if ext == ".npy":
            return {"": np.load(path, mmap_mode="r")}
        if ext == ".npz":
            with np.load(path) as arrays:
                return {k: arrays[k] for k in arrays.files}
        from safetensors.numpy import load_file

        return load_file(path)
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is what is wrong
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{what} file {path!r} cannot be read as {ext}: {reason}") from None


def _load(path: str, y_path=None, what="train"):
    """``(X, y)`` from a features file (and a labels file for .npy), shapes checked; UsageError
    naming the file otherwise."""
    flag = f"--{what}-y"
    arrays = _open(path, f"{what} features")
    if "" in arrays:
        if y_path is None:
            raise UsageError(f"{what} features are a .npy file: give its labels with {flag} labels.npy")
        X = arrays[""]
        labels = _open(y_path, f"{flag}")
        if "" not in labels:
            raise UsageError(f"{flag} {y_path!r} should be a .npy file of labels")
        y, y_name = labels[""], f"{flag} {y_path!r}"
    else:
        if y_path is not None:
            raise UsageError(f"{flag} is for .npy features; {path!r} holds its own labels")
        xk = next((k for k in _X_KEYS if k in arrays), None)
        yk = next((k for k in _Y_KEYS if k in arrays), None)
        if xk is None or yk is None:
            raise UsageError(f"{path!r} should hold features under one of {_X_KEYS} and labels under "
                             f"one of {_Y_KEYS}; found {sorted(arrays.keys())}")
        X, y, y_name = arrays[xk], arrays[yk], f"the labels {yk!r} of {path!r}"
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{what} features {path!r} should be a 2-D (samples, features) array, got "
                         f"shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise UsageError(f"{what} features {path!r} should hold real numbers, got dtype {X.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise UsageError(f"{y_name} should be 1-D (one label per sample), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise UsageError(f"{what} features {path!r} have {X.shape[0]} rows but {y_name} has "
                         f"{y.shape[0]} labels")
    if np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.integer):
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise UsageError(f"{y_name} holds {bad.size} NaN or inf labels, the first at index {bad[0]}")
    try:  # named by file and row here: after a train / val split, rows are renumbered
        _data.check_finite(_data.as_feature_tensor(X), 65536, f"{what} features {path!r}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return X, y


def _check_args(args) -> "torch.device":
    """Every option's type and range, before any file is read; returns the device."""
    checks = [
        (lambda: check_real(args.c_min, "--c-min")),
        (lambda: check_real(args.c_max, "--c-max")),
        (lambda: check_int(args.n_c, "--n-c", min=1, max=10000)),
        (lambda: check_real(args.tol, "--tol", min=0, min_open=True)),
        (lambda: check_int(args.max_iter, "--max-iter", min=1)),
        (lambda: check_int(args.seed, "--seed", min=0)),
    ]
    if not (args.val or args.val_cache):
        checks.append(lambda: check_real(args.val_fraction, "--val-fraction", min=0, max=1,
                                         min_open=True, max_open=True))
    for check in checks:
        try:
            check()
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    if args.c_min > args.c_max:
        raise UsageError(f"--c-min ({args.c_min:g}) should be <= --c-max ({args.c_max:g})")
    if args.val_y and not args.val:
        raise UsageError("--val-y is given without --val")
    if (args.train is None) == (args.cache is None):
        raise UsageError("give the training features either as a file or as --cache DIR (one of them)")
    if args.cache is not None and (args.train_y or args.val):
        raise UsageError("--cache reads features and labels from the cache: give the validation rows "
                         "with --val-cache (or --val-fraction), not --val / --train-y")
    if args.val_cache is not None and args.cache is None:
        raise UsageError("--val-cache is given without --cache")
    try:
        return as_compute_device(args.device, "--device")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _open_cache(path: str, what: str):
    from pyrobust.features import FeatureCache

    try:
        return FeatureCache.open(path, verify=False)  # each rank verifies its own chunks
    except (FileNotFoundError, TypeError, ValueError) as exc:
        raise UsageError(f"{what} {path!r}: {exc}") from None


def _join_group(device):
    """``(group, rank, world, joined)`` under torchrun (WORLD_SIZE > 1): the default group,
    initialised here when it is not yet (gloo on the CPU, nccl on CUDA); else one process."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD, dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, 0, 1, False
    if not dist.is_available():
        raise UsageError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.group.WORLD, dist.get_rank(), dist.get_world_size(), True


def _check_every_rank_has_rows(owner: np.ndarray, world: int, what: str) -> None:
    """UsageError, raised alike on every rank (each sees every rank's count), when a rank would
    have no rows: it would fail its checks while the others wait in a collective."""
    counts = np.bincount(owner, minlength=world)
    if world > 1 and counts.min() == 0:
        raise UsageError(f"{what} has no rows for rank {int(counts.argmin())} of {world}: use fewer "
                         "ranks or a cache with more chunks")


def _chunk_owner(cache, world: int) -> np.ndarray:
    """The rank owning each row of ``cache`` (``FeatureCache.rank_chunks``)."""
    return (np.arange(len(cache)) // int(cache.manifest["chunk_size"])) % world


def _load_cache(args, rank: int, world: int):
    """``(X, y, Xv, yv)``: this rank's train and val rows of ``--cache`` (and ``--val-cache``).
    Without ``--val-cache`` the val rows are a seeded fraction of the cache's rows, the same rows
    as the file path's split of the whole cache (one permutation of N on every rank)."""
    from pyrobust.features.store import CacheCorrupted

    train = _open_cache(args.cache, "--cache")
    owner = _chunk_owner(train, world)
    if args.val_cache is not None:
        val = _open_cache(args.val_cache, "--val-cache")
        if val.feature_dim != train.feature_dim:
            raise UsageError(f"--val-cache {args.val_cache!r} has {val.feature_dim} features, "
                             f"--cache {args.cache!r} has {train.feature_dim}")
        _check_every_rank_has_rows(owner, world, f"--cache {args.cache!r}")
        _check_every_rank_has_rows(_chunk_owner(val, world), world, f"--val-cache {args.val_cache!r}")
    else:
        n = len(train)
        n_val = max(1, int(round(args.val_fraction * n)))
        if n_val >= n:
            raise UsageError(f"--val-fraction {args.val_fraction:g} of {n} samples leaves none to "
                             "train on")
        held = np.zeros(n, bool)
        held[np.random.default_rng(args.seed).permutation(n)[:n_val]] = True
        _check_every_rank_has_rows(owner[~held], world, f"the training rows of --cache {args.cache!r}")
        _check_every_rank_has_rows(owner[held], world, f"the val rows of --cache {args.cache!r}")
    try:
        X, y, rows = train.shard(rank, world)
        if args.val_cache is not None:
            Xv, yv, _ = val.shard(rank, world)
            return X, y, Xv, yv
    except CacheCorrupted as exc:
        raise UsageError(str(exc)) from None
    v = held[rows]
    return X[~v], y[~v], X[v], y[v]


def _load_shared(args, group, rank: int, world: int):
    """:func:`_load_cache`, failing on every rank when it fails on one (a rank left waiting in
    the sweep's first collective would hang)."""
    import torch

    from pyrobust.probe import group as _group

    try:
        data, error = _load_cache(args, rank, world), None
    except UsageError as exc:
        data, error = None, exc
    failed = float(_group.sum_(torch.tensor([float(error is not None)]), group))
    if error is not None:
        raise error
    if failed:
        raise UsageError("another rank could not read its share of the cache (see its message)")
    return data


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
    """Run the sweep; returns the process exit code. Options, the output folder and the input files
    are checked first; a mistake in any is a :class:`UsageError`."""
    device = _check_args(args)
    out = check_out_folder(args.out)
    for name in ("probe_head.safetensors", "probe_path.png"):
        if os.path.isdir(os.path.join(out, name)):
            raise UsageError(f"--out {out!r} holds a folder named {name!r}, where the {name} file goes")
    if args.cache is not None:
        group, rank, world, joined = _join_group(device)
        try:
            return _run(args, device, out, *_load_shared(args, group, rank, world), group, rank)
        finally:
            if joined:
                import torch.distributed as dist

                dist.destroy_process_group()
    X, y = _load(args.train, args.train_y, "train")
    if args.val:
        Xv, yv = _load(args.val, args.val_y, "val")
        if Xv.shape[1] != X.shape[1]:
            raise UsageError(f"val features {args.val!r} have {Xv.shape[1]} features, train features "
                             f"{args.train!r} have {X.shape[1]}")
    else:
        n_val = max(1, int(round(args.val_fraction * len(y))))
        if n_val >= len(y):
            raise UsageError(f"--val-fraction {args.val_fraction:g} of {len(y)} samples leaves none "
                             "to train on")
        perm = np.random.default_rng(args.seed).permutation(len(y))
        vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        X, Xv, yv, y = X[ti], X[vi], y[vi], y[ti]
    return _run(args, device, out, X, y, Xv, yv)


def _run(args, device, out, X, y, Xv, yv, group=None, rank: int = 0) -> int:
    """Sweep, then (rank 0) print the table and write the head and the plot."""
    from safetensors.numpy import save_file

    from pyrobust.probe import probe_sweep
    from pyrobust.probe.scoring import head_metrics

    Cs = np.logspace(args.c_min, args.c_max, args.n_c)
    try:
        res = probe_sweep(X, y, Xv, yv, Cs, standardize=args.standardize, device=device,
                          tol=args.tol, max_iter=args.max_iter, refit=args.refit,
                          progress=not args.no_progress and rank == 0, process_group=group)
    except (TypeError, ValueError) as exc:  # the data's content (NaN, one class, bad weights)
        raise UsageError(str(exc).splitlines()[0]) from None
    Xt = _data.as_feature_tensor(X)
    codes = np.searchsorted(res.classes, y)
    res.train_accuracy = np.array([
        head_metrics(Xt, c, b, codes, np.ones(len(y), bool), device=res.best_estimator.device,
                     group=group)[0]
        for c, b in zip(res.coefs, res.intercepts)])
    if rank != 0:
        return 0
    print(res.table())
    os.makedirs(out, exist_ok=True)
    est = res.best_estimator
    classes = np.asarray(res.classes)
    tensors = {"weight": est.coef_.astype(np.float32), "bias": est.intercept_.astype(np.float32)}
    meta = {"best_C": f"{res.best_C:.6g}", "standardize": args.standardize}
    if np.issubdtype(classes.dtype, np.number):
        tensors["classes"] = classes.astype(np.int64 if np.issubdtype(classes.dtype, np.integer)
                                            else np.float64)
    else:
        meta["classes"] = "\n".join(map(str, classes))
    head = os.path.join(out, "probe_head.safetensors")
    save_file(tensors, head, metadata=meta)
    plot = os.path.join(out, "probe_path.png")
    plot_path(res, plot)
    print(f"best C = {res.best_C:.4g} (val accuracy {res.val_accuracy[res.best_index]:.4f}); "
          f"head: {head}; plot: {plot}")
    if not res.converged.all():
        print("warning: some C did not converge (see the table)")
    return 0


def main(argv=None) -> int:
    from pyrobust.cli import main as cli_main

    return cli_main(["probe", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
