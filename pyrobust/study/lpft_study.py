"""The end-to-end LP / FT / LP-FT robustness study behind ``pyrobust demo`` and ``pyrobust lpft``.

Steps: load the ID data, the user's natural-shift OOD sets (``ood_datasets``: image folders or
``.npz`` files, :mod:`pyrobust.study.ood_sets`) and corrupted copies of the ID test split → extract
and cache the pretrained backbone's features → sweep the linear probe (LP) and pick its head
(:mod:`pyrobust.study.lp_head`) → fine-tune from a fresh head (FT) and from the LP head (LP-FT) over
small learning-rate grids → LP-FT again with each batch mixer → evaluate every model on ID test and
every OOD set → measure how far FT and LP-FT moved the penultimate features on ID and OOD inputs →
the linear-theory panel → ``results.json`` and a self-contained ``report.html``.

The question it answers (Kumar et al., ICLR 2022): which way of transferring keeps OOD accuracy,
and how much did the features move? The report says which regime the data are in, from LP's OOD
accuracy against FT's (:mod:`pyrobust.study.regime`), and which fine-tuning runs stopped short of
their plateau (:mod:`pyrobust.study.plateau`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from pyrobust.augment import MIXER_NAMES
from pyrobust.augment import make_mixer as build_mixer
from pyrobust.errors import UsageError, check_dataset, check_out_folder, resolve_device
from pyrobust.study.config import StudyConfig
from pyrobust.study.lp_head import RULE as CALIBRATED_RULE
from pyrobust.study.lp_head import accuracy_margin, lp_head_index
from pyrobust.study.ood_sets import check_ood_paths, load_ood_set, ood_set_name
from pyrobust.study.plateau import plateau_status
from pyrobust.study.regime import regime_verdict

# Each mixer at its own defaults except MixUp, at alpha 0.2 (milder blends than its default alpha 1).
MIXER_SETTINGS = {"mixup": {"alpha": 0.2}}

# the probe head LP and LP-FT use (StudyConfig.lp_head)
LP_HEAD_RULES = {"calibrated": CALIBRATED_RULE,
                 "best-accuracy": "best validation accuracy, ties to the smaller C (the probe sweep's own choice)"}
LP_HEAD_CHOICES = tuple(LP_HEAD_RULES)


def study_mixer(name: str, num_classes: int, seed: int = 0):
    """The batch mixer ``name`` (one of :data:`MIXER_NAMES`) with this study's settings, seeded by ``seed``."""
    return build_mixer(name, num_classes, generator=torch.Generator().manual_seed(seed), **MIXER_SETTINGS.get(name, {}))


make_mixer = study_mixer  # the name this function had first


def validate(cfg: StudyConfig) -> None:
    """Every check a user can fail, before any work or any file is written."""
    from pyrobust.data import CORRUPTIONS
    from pyrobust.models.registry import BACKBONE_NAMES

    check_dataset(cfg.dataset)
    name = cfg.backbone.strip().lower().replace("-", "_")
    if name not in BACKBONE_NAMES and not cfg.backbone.startswith(("torchvision:", "timm:")):
        raise UsageError(
            f"unknown backbone {cfg.backbone!r}; known: {', '.join(BACKBONE_NAMES)}, torchvision:<name>, timm:<name>"
        )
    check_out_folder(cfg.out)
    for m in cfg.mixers:
        if m not in MIXER_NAMES:
            raise UsageError(f"unknown mixer {m!r}; known: {', '.join(MIXER_NAMES)}")
    for c in cfg.corruptions:
        if c not in CORRUPTIONS:
            raise UsageError(f"unknown corruption {c!r}; known: {', '.join(CORRUPTIONS)}")
    if not cfg.corruptions and not cfg.ood_datasets:
        raise UsageError("no OOD sets: give ood_datasets (--ood PATH), corruptions, or both")
    if cfg.corruptions and not cfg.severities:
        raise UsageError("severities must not be empty when corruptions are given")
    for s in cfg.severities:
        if not isinstance(s, int) or not 1 <= s <= 5:
            raise UsageError(f"severities must be integers in 1..5, got {s!r}")
    check_ood_paths(cfg.ood_datasets, reserved=corruption_set_names(cfg))
    if cfg.lp_head not in LP_HEAD_CHOICES:
        raise UsageError(f"lp_head must be one of {', '.join(LP_HEAD_CHOICES)}, got {cfg.lp_head!r}")
    resolve_device(cfg.device)
    if cfg.standardize not in ("none", "feature", "scalar"):
        raise UsageError(f"standardize must be none, feature or scalar, got {cfg.standardize!r}")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise UsageError(f"optimizer must be sgd or adamw, got {cfg.optimizer!r}")
    for key in ("image_size", "epochs", "batch_size", "n_cs"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"{key} must be >= 1, got {getattr(cfg, key)!r}")
    for key in ("max_train", "max_val", "max_test", "num_workers", "seed", "feature_change_batches",
                "theory_seeds"):
        if getattr(cfg, key) < 0:
            raise UsageError(f"{key} must be >= 0 (max_*: 0 means all), got {getattr(cfg, key)!r}")
    if not cfg.c_min < cfg.c_max:
        raise UsageError(f"c_min must be below c_max (log10 of C), got {cfg.c_min!r} and {cfg.c_max!r}")
    if not cfg.ft_lrs or not cfg.lpft_lrs or not cfg.seeds:
        raise UsageError("ft_lrs, lpft_lrs and seeds must not be empty")
    for key in ("ft_lrs", "lpft_lrs"):
        if any(not lr > 0 for lr in getattr(cfg, key)):
            raise UsageError(f"{key} must hold learning rates > 0, got {getattr(cfg, key)!r}")
    if any(s < 0 for s in cfg.seeds):
        raise UsageError(f"seeds must be integers >= 0, got {cfg.seeds!r}")


def _subset(ds, limit: int, seed: int):
    if not limit or limit >= len(ds):
        return ds
    idx = np.random.default_rng(seed).permutation(len(ds))[:limit]
    return Subset(ds, sorted(idx.tolist()))


def _labels_of(ds) -> np.ndarray:
    if isinstance(ds, Subset):
        return _labels_of(ds.dataset)[np.asarray(ds.indices)]
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return np.asarray(labels)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def corruption_set_names(cfg: StudyConfig) -> list[str]:
    """The names of the corrupted OOD sets, ``corruption@severity``."""
    return [f"{c}@{s}" for c in cfg.corruptions for s in cfg.severities]


def load_data(cfg: StudyConfig):
    """ID splits (subsampled as configured), the number of classes, and the OOD sets (natural shifts first,
    then corrupted copies of the test split)."""
    from pyrobust.data import CorruptedDataset, DatasetNotFoundError, get_dataset

    try:
        splits = get_dataset(cfg.dataset, image_size=cfg.image_size, seed=cfg.seed)
    except DatasetNotFoundError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"dataset {cfg.dataset!r}: {str(exc).splitlines()[0]}") from None
    train = _subset(splits["train"], cfg.max_train, cfg.seed)
    val = _subset(splits["val"], cfg.max_val, cfg.seed + 1)
    test = _subset(splits["test"], cfg.max_test, cfg.seed + 2)
    num_classes = int(max(_labels_of(train).max(), _labels_of(val).max(), _labels_of(test).max())) + 1
    id_classes = getattr(splits["train"], "classes", None) or [str(i) for i in range(num_classes)]
    ood = {ood_set_name(p): load_ood_set(p, id_classes[:num_classes], cfg.image_size) for p in cfg.ood_datasets}
    ood.update({f"{c}@{s}": CorruptedDataset(test, c, s, seed=cfg.seed) for c in cfg.corruptions for s in cfg.severities})
    return train, val, test, num_classes, ood


def run_study(cfg: StudyConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the whole study, write ``results.json`` and ``report.html`` into ``cfg.out``; return the results."""
    from pyrobust.lpft import run_lpft
    from pyrobust.models import get_backbone
    from pyrobust.theory import linear_toy_seeds

    validate(cfg)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train, val, test, num_classes, ood = load_data(cfg)
    try:
        model = get_backbone(cfg.backbone, num_classes=num_classes, image_size=cfg.image_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    timings["data_and_model_s"] = time.perf_counter() - start
    os.makedirs(cfg.out, exist_ok=True)
    natural = [ood_set_name(p) for p in cfg.ood_datasets]
    what = ", ".join(f"{n} ({len(ood[n])} images)" for n in natural)
    if cfg.corruptions:
        what += (", " if what else "") + f"{len(ood) - len(natural)} corrupted copies of the test split"
    log(f"ID data: {cfg.dataset} ({len(train)} train / {len(val)} val / {len(test)} test, {num_classes} classes, "
        f"{cfg.image_size} px); OOD: {what}; backbone {cfg.backbone}; {device}")

    g = torch.Generator().manual_seed(cfg.seed)
    mk = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    train_loader = DataLoader(train, shuffle=True, generator=g, drop_last=False, **mk)
    val_loader = DataLoader(val, shuffle=False, **mk)
    test_loader = DataLoader(test, shuffle=False, **mk)
    ood_loaders = {name: DataLoader(ds, shuffle=False, **mk) for name, ds in ood.items()}
    Cs = np.logspace(cfg.c_min, cfg.c_max, cfg.n_cs)
    select_head = None
    if cfg.lp_head == "calibrated":
        def select_head(sweep):
            return lp_head_index(sweep.val_accuracy, sweep.val_loss, len(val))
    common = dict(
        train=train_loader, val=val_loader, id_test=test_loader, ood=ood_loaders, epochs=cfg.epochs,
        Cs=Cs, seeds=tuple(cfg.seeds), cache_dir=os.path.join(cfg.out, "feature-cache"),
        probe_kwargs={"standardize": cfg.standardize}, select_head=select_head,
        feature_change_batches=cfg.feature_change_batches or None, device=device, progress=progress,
    )

    t = time.perf_counter()
    study = run_lpft(model, ft_lrs=tuple(cfg.ft_lrs), lpft_lrs=tuple(cfg.lpft_lrs),
                     finetune_kwargs={"optimizer": cfg.optimizer}, **common)
    timings["lp_ft_lpft_s"] = time.perf_counter() - t
    rows = list(study.rows)
    lpft_lr = study.row("lpft")["lr"]
    for name in cfg.mixers:
        t = time.perf_counter()
        log(f"LP-FT with {name} at lr {lpft_lr:g}")
        mixer = study_mixer(name, num_classes, cfg.seed)
        mixed = run_lpft(model, methods=("lpft",), ft_lrs=(), lpft_lrs=(lpft_lr,), lp_head=study.lp_head,
                         finetune_kwargs={"optimizer": cfg.optimizer, "mixer": mixer}, **common)
        row = dict(mixed.row("lpft"))
        row["method"] = f"lpft+{name}"
        rows.append(row)
        timings[f"lpft+{name}_s"] = time.perf_counter() - t

    t = time.perf_counter()
    theory = linear_toy_seeds(seeds=range(cfg.theory_seeds))
    timings["theory_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start

    sizes = {"train_val_test": (len(train), len(val), len(test)), "ood": {n: len(ds) for n, ds in ood.items()}}
    results = assemble_results(cfg, rows, study, theory, timings, device, num_classes, sizes)
    from pyrobust.study.lpft_report import write_report

    t = time.perf_counter()
    write_report(cfg, results, study, theory)
    results["timings"]["report_s"] = time.perf_counter() - t
    from pyrobust.report import write_json

    write_json(os.path.join(cfg.out, "results.json"), results)
    return results


def _method_doc(r: dict, groups: dict, n_val: int) -> dict:
    doc = {
        "id_accuracy": r["id_test"],
        "id_val_accuracy": r["id_val"],
        "ood_accuracy": r["ood_mean"],
        "ood_by_set": {n: r[n] for names in groups.values() for n in names},
        "ood_by_group": {g: float(np.mean([r[n] for n in names])) for g, names in groups.items() if names},
        "lr": r["lr"],
        **({"C": r["C"]} if r.get("C") is not None else {}),
        **{k: r[k] for k in ("id_test_std", "ood_mean_std") if k in r},
    }
    # what the run started from and how its training went (head norm: Frobenius norm of the head's weight)
    for k in ("head_norm", "first_epoch_loss", "train_loss_by_epoch", "val_accuracy_by_epoch"):
        if k in r:
            doc[k] = r[k]
    if "val_accuracy_by_epoch" in r:
        doc["plateau"] = plateau_status(r["val_accuracy_by_epoch"], n_val)
    return doc


def _probe_doc(probe, n_val: int, rule: str, head_C) -> dict:
    if probe is None:
        return {}
    norms = [float(np.linalg.norm(c)) for c in probe.coefs]
    return {
        "Cs": [float(c) for c in probe.Cs],
        "val_accuracy": [float(a) for a in probe.val_accuracy],
        "val_loss": [float(v) for v in probe.val_loss],
        "train_loss": [float(v) for v in probe.train_loss],
        "head_norm": norms,
        "n_iter": [int(i) for i in probe.n_iter],
        "converged": [bool(c) for c in probe.converged],
        "best_C": float(probe.best_C),
        "head_rule": LP_HEAD_RULES[rule],
        "head_C": head_C,
        "accuracy_margin": accuracy_margin(float(np.max(probe.val_accuracy)), n_val),
        "seconds": float(getattr(probe, "seconds", 0.0)),
    }


def assemble_results(cfg, rows, study, theory, timings, device, num_classes, sizes) -> dict:
    """The ``results.json`` document (accuracies as fractions, feature change as mean squared change).

    ``sizes``: ``{"train_val_test": (n_train, n_val, n_test), "ood": {set name: images}}`` (a plain
    ``(n_train, n_val, n_test)`` is read as the first, every OOD set then counted as the test split's size).
    """
    ood_names = list(study.ood_names)
    if not isinstance(sizes, dict):
        sizes = {"train_val_test": tuple(sizes), "ood": {n: sizes[2] for n in ood_names}}
    n_val = sizes["train_val_test"][1]
    corrupted = set(corruption_set_names(cfg))
    groups = {"natural": [n for n in ood_names if n not in corrupted],
              "corrupted": [n for n in ood_names if n in corrupted]}
    methods, change = {}, {}
    for r in rows:
        methods[r["method"]] = _method_doc(r, groups, n_val)
        if r["method"] != "lp":
            change[r["method"]] = {
                "id": r["feature_change_id"],
                "ood": r["feature_change_ood"],
                "procrustes_id": r["procrustes_id"],
                "procrustes_ood": r["procrustes_ood"],
            }
    lp, ft, lpft = methods["lp"], methods["ft"], methods["lpft"]
    ratio = change["ft"]["id"] / max(change["lpft"]["id"], 1e-30)
    regime = regime_verdict(methods, change, sizes["ood"], groups, ft.get("plateau"))
    stopped_short = [m for m, d in methods.items() if d.get("plateau", {}).get("reached") is False]
    return {
        "methods": methods,
        "feature_change": change,
        "probe": _probe_doc(getattr(study, "probe", None), n_val, cfg.lp_head, lp.get("C")),
        "regime": regime,
        "theory": {m: {k: theory[m][k]["mean"] for k in ("id_error", "ood_error", "feature_distance")}
                   for m in ("lp", "ft", "lpft")},
        "findings": {
            "lpft_ood_ge_ft_ood": bool(lpft["ood_accuracy"] >= ft["ood_accuracy"]),
            "ft_over_lpft_feature_change_id": ratio,
            "lp_id_accuracy": lp["id_accuracy"],
            "features_good_on_shift": regime["features_good_on_shift"],
            "stopped_short_of_plateau": stopped_short,
        },
        "config": {**cfg.to_dict(), "device": str(device), "num_classes": num_classes,
                   "train_val_test_sizes": list(sizes["train_val_test"]), "ood_sets": ood_names,
                   "ood_groups": groups, "ood_set_sizes": dict(sizes["ood"])},
        "timings": timings,
    }


def summary_table(results: dict) -> str:
    """The one-screen table printed at the end of the study."""
    from pyrobust.report import format_table

    rows = []
    for name, m in results["methods"].items():
        ch = results["feature_change"].get(name, {"id": 0.0, "ood": 0.0})
        rows.append([name, "-" if m["lr"] is None else f"{m['lr']:g}", f"{100 * m['id_accuracy']:.1f}",
                     f"{100 * m['ood_accuracy']:.1f}", f"{ch['id']:.4g}", f"{ch['ood']:.4g}"])
    return format_table(rows, ["method", "lr", "ID test %", "OOD mean %", "feat. change ID", "feat. change OOD"])


def config_from_args(args, base: StudyConfig | None = None) -> StudyConfig:
    """Apply command-line overrides (those not None) onto a configuration."""
    cfg = base or (StudyConfig.quick() if getattr(args, "quick", False) else StudyConfig())
    overrides = {}
    for key in ("dataset", "backbone", "out", "device", "epochs", "image_size", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "mixers", None) is not None:
        overrides["mixers"] = [m for m in args.mixers.split(",") if m]
    if getattr(args, "ood", None):
        overrides["ood_datasets"] = list(cfg.ood_datasets) + list(args.ood)
    return dataclasses.replace(cfg, **overrides)
