"""The LP-FT study's report: the pictures and the words around ``results.json``."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from pyrobust.report import Report, new_figure
from pyrobust.study.config import StudyConfig

LABELS = {"lp": "LP", "ft": "FT", "lpft": "LP-FT"}


def _label(method: str) -> str:
    base, _, mixer = method.partition("+")
    return LABELS.get(base, base) + (f" + {mixer}" if mixer else "")


def accuracy_scatter(results: dict):
    fig = new_figure(5.5, 4.2)
    ax = fig.add_subplot()
    for name, m in results["methods"].items():
        ax.scatter(100 * m["id_accuracy"], 100 * m["ood_accuracy"], s=60, label=_label(name))
    ax.set_xlabel("ID test accuracy (%)")
    ax.set_ylabel("mean OOD accuracy (%)")
    ax.set_title("ID vs OOD accuracy per method")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def severity_curves(results: dict, cfg: StudyConfig):
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    sev = [0] + list(cfg.severities)
    for name, m in results["methods"].items():
        ys = [100 * m["id_accuracy"]]
        for s in cfg.severities:
            ys.append(100 * np.mean([m["ood_by_set"][f"{c}@{s}"] for c in cfg.corruptions]))
        ax.plot(sev, ys, marker="o", label=_label(name))
    ax.set_xticks(sev, ["clean"] + [str(s) for s in cfg.severities])
    ax.set_xlabel("corruption severity (mean over corruptions)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy against corruption severity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def feature_change_bars(results: dict):
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    names = list(results["feature_change"])
    x = np.arange(len(names))
    ids = [max(results["feature_change"][n]["id"], 1e-12) for n in names]
    oods = [max(results["feature_change"][n]["ood"], 1e-12) for n in names]
    ax.bar(x - 0.2, ids, 0.4, label="ID (test)")
    ax.bar(x + 0.2, oods, 0.4, label="OOD (corrupted test)")
    ax.set_yscale("log")
    ax.set_xticks(x, [_label(n) for n in names], fontsize=8)
    ax.set_ylabel("mean squared change of penultimate features")
    ax.set_title("How far fine-tuning moved the features")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return fig


def probe_path(probe: dict):
    fig = new_figure(7.5, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    Cs = probe["Cs"]
    ax1.semilogx(Cs, [100 * a for a in probe["val_accuracy"]], marker="o", label="val accuracy")
    ax1.axvline(probe["best_C"], color="grey", ls="--", lw=1, label=f"best C = {probe['best_C']:.3g}")
    ax1.set_xlabel("C (inverse regularisation)")
    ax1.set_ylabel("accuracy (%)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.loglog(Cs, probe["train_loss"], marker="o", label="train loss")
    ax2.loglog(Cs, probe["val_loss"], marker="s", label="val loss")
    ax2.set_xlabel("C")
    ax2.set_ylabel("cross-entropy")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle("Linear probe: regularisation path")
    return fig


def regime_text(results: dict) -> str:
    m, ch = results["methods"], results["feature_change"]
    lp, ft, lpft = m["lp"], m["ft"], m["lpft"]
    ratio = ch["ft"]["id"] / max(ch["lpft"]["id"], 1e-30)
    parts = [
        f"LP reaches {100 * lp['id_accuracy']:.1f}% ID test accuracy from frozen features"
        + (" — the pretrained features are weak for this task, the regime where the paper expects the features must"
           " change and FT can win OOD too." if lp["id_accuracy"] < 0.95 else
           " — the pretrained features are good for this task, the regime the paper's theory covers."),
        f"OOD: LP-FT {100 * lpft['ood_accuracy']:.1f}% vs FT {100 * ft['ood_accuracy']:.1f}% "
        + ("(LP-FT ≥ FT: the paper's pattern appears)." if lpft["ood_accuracy"] >= ft["ood_accuracy"]
           else "(FT > LP-FT: the paper's OOD pattern does not appear on this data)."),
        f"Feature change on ID inputs: FT moved the features {ratio:.1f}× as much as LP-FT "
        + ("(the paper's pattern: FT distorts far more)." if ratio > 2 else "(no clear difference here)."),
    ]
    return " ".join(parts)


def write_report(cfg: StudyConfig, results: dict, study, theory) -> str:
    from pyrobust.report.gallery import mask_gallery_figure
    from pyrobust.theory import plot_linear_toy

    rep = Report("pyrobust: LP vs FT vs LP-FT")
    c = results["config"]
    rep.paragraph(
        f"ID data {cfg.dataset} ({c['train_val_test_sizes'][0]} train / {c['train_val_test_sizes'][1]} val / "
        f"{c['train_val_test_sizes'][2]} test, {c['num_classes']} classes) at {cfg.image_size} px; backbone "
        f"{cfg.backbone}; device {c['device']}. OOD sets: the ID test split under {', '.join(cfg.corruptions)} at "
        f"severities {', '.join(map(str, cfg.severities))}. LP: probe sweep over {cfg.n_cs} values of C in "
        f"logspace({cfg.c_min:g}, {cfg.c_max:g}), {cfg.standardize} standardisation folded into the head. FT and "
        f"LP-FT: {cfg.optimizer.upper()}, {cfg.epochs} epochs, cosine schedule, BatchNorm in eval mode, lr grids "
        f"{cfg.ft_lrs} (FT) and {cfg.lpft_lrs} (LP-FT), seeds {cfg.seeds}; mixers during LP-FT: "
        f"{', '.join(cfg.mixers) or 'none'}. Wall time {results['timings']['total_s']:.0f} s."
    )
    rep.note(regime_text(results))
    rep.heading("Results")
    rows = []
    for name, m in results["methods"].items():
        ch = results["feature_change"].get(name)
        rows.append([_label(name), "—" if m["lr"] is None else f"{m['lr']:g}", round(100 * m["id_accuracy"], 1),
                     round(100 * m["ood_accuracy"], 1), ch["id"] if ch else 0.0, ch["ood"] if ch else 0.0,
                     ch["procrustes_id"] if ch else 0.0])
    rep.table(rows, ["method", "lr", "ID test %", "OOD mean %", "Δfeat ID (mean sq.)", "Δfeat OOD (mean sq.)",
                     "Procrustes ID"])
    rep.figure(accuracy_scatter(results), "id_vs_ood", "Each method's ID test accuracy against its mean OOD accuracy.")
    rep.figure(severity_curves(results, cfg), "accuracy_vs_severity",
               "Accuracy on the clean test split and at each severity, averaged over the corruptions.")
    per_set = [[_label(n)] + [round(100 * m["ood_by_set"][s], 1) for s in c["ood_sets"]] for n, m in results["methods"].items()]
    rep.table(per_set, ["method"] + c["ood_sets"])
    rep.heading("Feature change")
    rep.figure(feature_change_bars(results), "feature_change",
               "Mean squared change of the penultimate features against the pretrained backbone (log scale).")
    if results["probe"]:
        rep.heading("Linear probe")
        rep.figure(probe_path(results["probe"]), "probe_path",
                   f"Validation accuracy and losses along the C grid; {sum(results['probe']['n_iter'])} solver "
                   f"iterations in all, {sum(results['probe']['converged'])}/{len(results['probe']['Cs'])} converged.")
    rep.heading("Batch mixers")
    rep.figure(mask_gallery_figure(), "mask_gallery",
               "SmoothMix (circle, square), CutMix, MixUp and Cutout on scikit-learn's two sample photos: "
               "the mixed image (top) and the mask G weighting the first photo (bottom).")
    rep.heading("Linear theory")
    t = results["theory"]
    rep.paragraph(
        f"The paper's linear overparameterised setting, {cfg.theory_seeds} seeds: OOD error LP {t['lp']['ood_error']:.3g}, "
        f"FT {t['ft']['ood_error']:.3g}, LP-FT {t['lpft']['ood_error']:.3g}; ID error LP {t['lp']['id_error']:.3g}, "
        f"FT {t['ft']['id_error']:.3g}."
    )
    with tempfile.TemporaryDirectory() as tmp:
        rep.image(str(plot_linear_toy(theory, os.path.join(tmp, "theory_curves.png"))),
                  "OOD error against training steps in the linear toy (mean over seeds, min-max band).")
    return rep.write(cfg.out)
