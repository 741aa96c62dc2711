"""``run_lpft``: the LP / FT / LP-FT comparison of Kumar et al. (ICLR 2022) on one backbone and one dataset.

Protocol (the LP-FT authors'): LP = probe sweep on cached frozen features (C by ID val accuracy); FT = full
fine-tuning from a fresh head; LP-FT = full fine-tuning from the LP head with a learning-rate grid about 10x lower.
Each fine-tuning method sweeps its small lr grid and keeps the lr with the best mean ID val accuracy over seeds.
Feature change is measured on the ID test and OOD sets against the pretrained backbone with
``pyrobust.distortion.feature_change``; LP leaves the backbone untouched, so its change is 0 by construction.
"""

from __future__ import annotations

import copy
import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from pyrobust.checks import check_int, check_real
from pyrobust.errors import resolve_device
from pyrobust.features import extract_features
from pyrobust.lpft.evaluate import evaluate
from pyrobust.lpft.finetune import _fresh_head, finetune
from pyrobust.lpft.probe_head import head_at, linear_probe
from pyrobust.tables import format_table

METHODS = ("lp", "ft", "lpft")


@dataclass
class LPFTStudy:
    """Result of :func:`run_lpft`.

    ``rows``: one dict per method at its selected lr (means over seeds; ``*_std`` when several seeds) with keys
    ``method``, ``lr`` (None for LP), ``C`` (LP only), ``id_val``, ``id_test``, ``ood_mean``, one key per OOD set,
    ``feature_change_id`` / ``feature_change_ood`` (mean squared change of penultimate features, OOD averaged over
    sets), ``procrustes_id`` / ``procrustes_ood``; for FT and LP-FT also ``head_norm`` (Frobenius norm of the head
    fine-tuning started from), ``first_epoch_loss``, and ``train_loss_by_epoch`` / ``val_accuracy_by_epoch``
    (means over seeds); for LP ``head_norm``. ``runs``: every (method, lr, seed) run with its accuracies and
    training history.
    """

    rows: list[dict]
    runs: list[dict] = field(default_factory=list)
    ood_names: list[str] = field(default_factory=list)
    probe: object = None  # the LP probe's SweepResult (regularisation path), when LP ran
    lp_head: object = None  # the linear head LP chose and LP-FT started from (an nn.Linear), when LP ran

    def row(self, method: str) -> dict:
        for r in self.rows:
            if r["method"] == method:
                return r
        raise KeyError(f"no row for method {method!r}; have {[r['method'] for r in self.rows]}")

    def to_markdown(self) -> str:
        """Accuracies in %, feature change as mean squared change ×100 (the authors' unit)."""
        head = ["method", "lr", "ID val", "ID test", "OOD mean", *self.ood_names, "Δfeat ID ×100", "Δfeat OOD ×100",
                "Procrustes ID", "Procrustes OOD"]

        def pct(r, k):
            s = f"{100 * r[k]:.1f}"
            return s + (f" ± {100 * r[k + '_std']:.1f}" if r.get(k + "_std") else "")

        rows = []
        for r in self.rows:
            rows.append([r["method"].upper().replace("LPFT", "LP-FT"), "—" if r["lr"] is None else f"{r['lr']:g}",
                         pct(r, "id_val"), pct(r, "id_test"), pct(r, "ood_mean"), *[pct(r, n) for n in self.ood_names],
                         f"{100 * r['feature_change_id']:.3g}", f"{100 * r['feature_change_ood']:.3g}",
                         f"{r['procrustes_id']:.3g}", f"{r['procrustes_ood']:.3g}"])
        return format_table(rows, head, markdown=True)


def _fresh(model) -> nn.Module:
    return model() if callable(model) and not isinstance(model, nn.Module) else copy.deepcopy(model)


def _sequential(loader: DataLoader) -> DataLoader:
    return DataLoader(loader.dataset, batch_size=loader.batch_size or 256, shuffle=False,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn)


def _summarise(method, lr, runs, ood_names, extra=None) -> dict:
    keys = ["id_val", "id_test", "ood_mean", *ood_names, "feature_change_id", "feature_change_ood",
            "procrustes_id", "procrustes_ood"]
    row = {"method": method, "lr": lr, **(extra or {})}
    for k in keys:
        vals = np.array([r[k] for r in runs], dtype=np.float64)
        row[k] = float(vals.mean())
        if len(vals) > 1:
            row[k + "_std"] = float(vals.std(ddof=1))
    if "head_norm" in runs[0]:
        row["head_norm"] = float(np.mean([r["head_norm"] for r in runs]))
    for k in ("train_loss_by_epoch", "val_accuracy_by_epoch"):
        if k in runs[0] and None not in runs[0][k]:
            row[k] = np.mean([r[k] for r in runs], axis=0).tolist()
    if "train_loss_by_epoch" in row:
        row["first_epoch_loss"] = row["train_loss_by_epoch"][0]
    row["seeds"] = [r["seed"] for r in runs]
    return row


def _check_lrs(lrs, name: str) -> None:
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
        raise TypeError(f"{name} must be a sequence of learning rates, got {lrs!r}")
    if not list(lrs):
        raise ValueError(f"{name} is empty: give at least one learning rate")
    for v in lrs:
        try:
            check_real(v, "lr", min=0, min_open=True)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold finite learning rates > 0, got {v!r} in {list(lrs)!r}") from None


def _check_kwargs(kwargs, name: str, fn, taken: tuple) -> None:
    """``kwargs`` (a dict or None) holds only arguments of ``fn`` that run_lpft does not set itself."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise TypeError(f"{name} must be a dict of keyword arguments or None, got {type(kwargs).__name__}")
    accepted = set(inspect.signature(fn).parameters) - set(taken)
    wrong = sorted(k for k in kwargs if k not in accepted)
    if wrong:
        raise ValueError(f"{name} has {', '.join(map(repr, wrong))}, which {fn.__name__} does not take or run_lpft "
                         f"sets itself; accepted: {', '.join(sorted(accepted))}")


def _check_study_args(methods, ood, seeds, epochs, ft_lrs, lpft_lrs, probe_kwargs, finetune_kwargs,
                      feature_change_batches, cache_dir) -> None:
    """Every argument of run_lpft, before any feature is extracted or any model trained."""
    from pyrobust.probe import probe_sweep

    if isinstance(methods, str) or not hasattr(methods, "__iter__"):
        raise TypeError(f"methods must be a sequence such as ('lp', 'ft', 'lpft'), got {methods!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}")
    if not isinstance(ood, dict):
        raise TypeError(f"ood must be a dict of name -> loader, got {type(ood).__name__}")
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or not list(seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    for s in seeds:
        check_int(s, f"seeds (in {list(seeds)!r})", min=0)
    check_int(epochs, "epochs", min=1)
    if "ft" in methods:
        _check_lrs(ft_lrs, "ft_lrs")
    if "lpft" in methods:
        _check_lrs(lpft_lrs, "lpft_lrs")
    _check_kwargs(probe_kwargs, "probe_kwargs", probe_sweep, ("X_train", "y_train", "X_val", "y_val", "Cs"))
    _check_kwargs(finetune_kwargs, "finetune_kwargs", finetune,
                  ("model", "head", "train_loader", "val_loader", "epochs", "lr", "seed", "device", "progress"))
    if feature_change_batches is not None:
        check_int(feature_change_batches, "feature_change_batches", min=1)
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a folder path or None, got {type(cache_dir).__name__}")
        if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise ValueError(f"cache_dir {os.fspath(cache_dir)!r} is a file, not a folder")


def _head_norm(head: nn.Module | None) -> float:
    return float(head.weight.detach().norm()) if isinstance(head, nn.Linear) else float("nan")


def run_lpft(
    model: nn.Module | Callable[[], nn.Module],
    *,
    train: DataLoader,
    val: DataLoader,
    id_test: DataLoader,
    ood: dict[str, DataLoader],
    epochs: int = 6,
    ft_lrs=(1e-3, 3e-3, 1e-2),
    lpft_lrs=(1e-4, 3e-4, 1e-3),
    Cs=None,
    seeds=(0,),
    methods=METHODS,
    cache_dir: str | None = None,
    probe_kwargs: dict | None = None,
    finetune_kwargs: dict | None = None,
    feature_change_batches: int | None = None,
    device=None,
    progress: bool = True,
    select_head: Callable[[object], int] | None = None,
    lp_head: nn.Module | None = None,
) -> LPFTStudy:
    """Run LP, FT and LP-FT on the same data and return one comparison table.

    Args:
        model: the pretrained classifier (``pyrobust.models.FeatureModel``: ``features(x)``, ``head``), deep-copied
            for every run, or a zero-argument factory returning a fresh one.
        train: shuffling training loader for fine-tuning (its dataset, in order, is used for LP features).
        val: ID validation loader (selects C and lr); id_test: ID test loader; ood: ``{name: loader}`` shifts.
        epochs: fine-tuning epochs. ft_lrs / lpft_lrs: lr grids (LP-FT's ~10x lower, as the authors found).
        Cs: probe C grid (default ``LPFT_DEFAULTS``). seeds: fine-tuning seeds (FT / LP-FT results are means).
        methods: subset of ``("lp", "ft", "lpft")``; ``"lpft"`` needs the LP head, so LP always runs if it does.
        cache_dir: where features are cached (default: a temporary directory, removed afterwards).
        probe_kwargs: extra ``linear_probe`` / ``probe_sweep`` arguments; finetune_kwargs: extra ``finetune``
            arguments (optimizer, mixer, early_stopping, ...).
        feature_change_batches: limit batches per set for the feature-change measurement.
        device, progress: as in :func:`finetune`.
        select_head: ``select_head(sweep_result) -> index`` of the C whose probe head LP and LP-FT use (default:
            the sweep's ``best_index``, the best ID val accuracy).
        lp_head: a linear head to use as LP's (e.g. an earlier study's ``.lp_head``, to start LP-FT with another
            fine-tuning recipe from the same head); given, no features are extracted and no probe is swept.

    Returns:
        :class:`LPFTStudy` (``.rows``, ``.runs``, ``.to_markdown()``).
    """
    from pyrobust.distortion import feature_change

    _check_study_args(methods, ood, seeds, epochs, ft_lrs, lpft_lrs, probe_kwargs, finetune_kwargs,
                      feature_change_batches, cache_dir)
    if lp_head is not None and not isinstance(lp_head, nn.Module):
        raise TypeError(f"lp_head must be an nn.Module (the head LP-FT starts from) or None, "
                        f"got {type(lp_head).__name__}")
    resolve_device(device)  # a device that does not exist is refused before any work
    ood_names = list(ood)
    eval_sets = {"id_val": val, "id_test": id_test, **ood}
    change_sets = {"id": id_test, **{f"ood:{k}": v for k, v in ood.items()}}
    ft_kwargs = dict(finetune_kwargs or {})
    pretrained = _fresh(model)
    tmp = tempfile.mkdtemp(prefix="pyrobust-lpft-") if cache_dir is None else None
    root = cache_dir or tmp
    rows, runs = [], []

    def record(method, lr, seed, m, extra=None):
        acc = evaluate(m, eval_sets, device=device)
        run = {"method": method, "lr": lr, "seed": seed, **acc,
               "ood_mean": float(np.mean([acc[k] for k in ood_names])) if ood_names else float("nan"),
               **(extra or {})}
        runs.append(run)
        return run

    def add_change(run, m):
        if m is None:
            run.update(feature_change_id=0.0, feature_change_ood=0.0, procrustes_id=0.0, procrustes_ood=0.0)
            return
        ch = feature_change(pretrained, m, change_sets, device=device, max_batches=feature_change_batches)
        oods = [ch[f"ood:{k}"] for k in ood_names] or [ch["id"]]
        run.update(feature_change_id=ch["id"]["mean_squared_change"],
                   feature_change_ood=float(np.mean([c["mean_squared_change"] for c in oods])),
                   procrustes_id=ch["id"]["procrustes_distance"],
                   procrustes_ood=float(np.mean([c["procrustes_distance"] for c in oods])))

    try:
        sweep = None
        lp_extra = {"head_norm": _head_norm(lp_head)}
        if lp_head is None and ("lp" in methods or "lpft" in methods):
            kw = dict(batch_size=train.batch_size, device=device, progress=progress)
            c_train = extract_features(pretrained, _sequential(train), os.path.join(root, "train"), **kw)
            c_val = extract_features(pretrained, _sequential(val), os.path.join(root, "val"), **kw)
            pk = {"progress": progress, **(probe_kwargs or {})}
            lp_head, sweep = linear_probe(c_train, c_val, Cs, **pk)
            index = sweep.best_index if select_head is None else int(select_head(sweep))
            if index != sweep.best_index:
                lp_head = head_at(sweep, index)
            lp_extra = {"C": float(sweep.Cs[index]), "head_norm": _head_norm(lp_head)}
        if "lp" in methods:
            m = copy.deepcopy(pretrained)
            m.head = copy.deepcopy(lp_head)
            run = record("lp", None, None, m, lp_extra)
            add_change(run, None)
            rows.append(_summarise("lp", None, [run], ood_names, lp_extra))

        for method, lrs in (("ft", ft_lrs), ("lpft", lpft_lrs)):
            if method not in methods:
                continue
            best = None  # (mean id_val, lr, [(run, model)])
            for lr in lrs:
                trials = []
                for seed in seeds:
                    m = _fresh(model)
                    head = copy.deepcopy(lp_head) if method == "lpft" else None
                    m, hist = finetune(m, head, train, val, epochs=epochs, lr=float(lr), seed=int(seed),
                                       device=device, progress=progress, **ft_kwargs)
                    # FT's fresh head is seeded by the run's seed: the same draw again gives its starting norm
                    start_norm = _head_norm(lp_head if method == "lpft" else _fresh_head(m, int(seed)))
                    trials.append((record(method, float(lr), int(seed), m, {
                        "head_norm": start_norm, "train_loss_by_epoch": list(hist["train_loss"]),
                        "val_accuracy_by_epoch": list(hist["val_accuracy"])}), m))
                score = float(np.mean([r["id_val"] for r, _ in trials]))
                if best is None or score > best[0]:
                    best = (score, float(lr), trials)
            for run, m in best[2]:
                add_change(run, m)
            rows.append(_summarise(method, best[1], [r for r, _ in best[2]], ood_names))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return LPFTStudy(rows=rows, runs=runs, ood_names=ood_names, probe=sweep, lp_head=lp_head)
