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
    ax1.axvline(probe["best_C"], color="grey", ls="--", lw=1, label=f"best val acc.: C = {probe['best_C']:.3g}")
    if probe.get("head_C") is not None and probe["head_C"] != probe["best_C"]:
        ax1.axvline(probe["head_C"], color="tab:red", ls=":", lw=1.5, label=f"head used: C = {probe['head_C']:.3g}")
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
    """The report's verdict: the regime (from ``results["regime"]``), then what LP-FT and FT did."""
    m, ch = results["methods"], results["feature_change"]
    ft, lpft = m["ft"], m["lpft"]
    ratio = ch["ft"]["id"] / max(ch["lpft"]["id"], 1e-30)
    parts = [
        results["regime"]["summary"],
        f"LP-FT reaches {100 * lpft['ood_accuracy']:.1f}% mean OOD accuracy against FT's {100 * ft['ood_accuracy']:.1f}% "
        + ("(LP-FT ≥ FT: the paper's pattern appears)." if lpft["ood_accuracy"] >= ft["ood_accuracy"]
           else "(FT > LP-FT: the paper's OOD pattern does not appear on this data)."),
        f"Feature change on ID inputs: FT moved the features {ratio:.1f}× as much as LP-FT "
        + ("(the paper's pattern: FT distorts far more)." if ratio > 2 else "(no clear difference here)."),
        f"LP's {100 * m['lp']['id_accuracy']:.1f}% ID test accuracy says how good the features are for the ID task, "
        "not on the shifted inputs.",
    ]
    return " ".join(parts)


def plateau_text(results: dict) -> str:
    short = results["findings"]["stopped_short_of_plateau"]
    if not short:
        one = [n for n, d in results["methods"].items() if d.get("plateau", {}).get("reached") is None and "plateau" in d]
        if one:
            return (f"{', '.join(_label(n) for n in one)}: one epoch only, so whether the run reached its plateau "
                    "cannot be told.")
        return ("Every fine-tuning run reached its plateau: its last epoch changed its validation accuracy by no more "
                "than one standard error.")
    parts = []
    for n in short:
        p = results["methods"][n]["plateau"]
        parts.append(f"{_label(n)} (+{100 * p['last_gain']:.1f} points in its last epoch, noise "
                     f"{100 * p['noise']:.1f})")
    return ("Stopped short of their plateau, their validation accuracy still rising in the last epoch beyond "
            f"one standard error: {'; '.join(parts)}. More epochs would raise these runs; comparisons with them "
            "may be deciding on the training budget rather than the method.")


def mixer_text(results: dict) -> str:
    m, ch = results["methods"], results["feature_change"]
    lpft = m["lpft"]
    parts = []
    for name in m:
        if not name.startswith("lpft+"):
            continue
        r = m[name]
        change = ch[name]["id"] / max(ch["lpft"]["id"], 1e-30)
        parts.append(f"{_label(name)}: {100 * r['id_accuracy']:.1f}% ID / {100 * r['ood_accuracy']:.1f}% OOD against "
                     f"LP-FT's {100 * lpft['id_accuracy']:.1f}% / {100 * lpft['ood_accuracy']:.1f}%, features moved "
                     f"{change:.1f}× as much, first-epoch loss {r.get('first_epoch_loss', float('nan')):.2f} "
                     f"(LP-FT {lpft.get('first_epoch_loss', float('nan')):.2f}).")
    return " ".join(parts)


def _ood_description(cfg: StudyConfig, results: dict) -> str:
    groups = results["config"]["ood_groups"]
    sizes = results["config"]["ood_set_sizes"]
    parts = []
    if groups["natural"]:
        parts.append("natural shifts " + ", ".join(f"{n} ({sizes[n]} images)" for n in groups["natural"]))
    if groups["corrupted"]:
        parts.append(f"the ID test split under {', '.join(cfg.corruptions)} at severities "
                     f"{', '.join(map(str, cfg.severities))}")
    return " and ".join(parts)


def write_report(cfg: StudyConfig, results: dict, study, theory) -> str:
    from pyrobust.report.gallery import mask_gallery_figure
    from pyrobust.theory import plot_linear_toy

    rep = Report("pyrobust: LP vs FT vs LP-FT")
    c = results["config"]
    probe = results["probe"]
    rep.paragraph(
        f"ID data {cfg.dataset} ({c['train_val_test_sizes'][0]} train / {c['train_val_test_sizes'][1]} val / "
        f"{c['train_val_test_sizes'][2]} test, {c['num_classes']} classes) at {cfg.image_size} px; backbone "
        f"{cfg.backbone}; device {c['device']}. OOD sets: {_ood_description(cfg, results)}. LP: probe sweep over "
        f"{cfg.n_cs} values of C in logspace({cfg.c_min:g}, {cfg.c_max:g}), {cfg.standardize} standardisation folded "
        f"into the head" + (f"; LP and LP-FT use the head at C = {probe['head_C']:.3g} ({probe['head_rule']})"
                            if probe else "") + f". FT and "
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
    rep.heading("Which regime: are the pretrained features good on the shifted data?")
    reg = results["regime"]
    rep.paragraph(f"Criterion: {reg['criterion']}. Per OOD set (accuracy %, and LP − FT in points against two "
                  "standard errors of that difference):")
    names = list(results["methods"])
    per_set = []
    for s in c["ood_sets"]:
        v = reg["by_set"][s]
        kind = "natural" if s in c["ood_groups"]["natural"] else "corrupted"
        per_set.append([s, kind, c["ood_set_sizes"][s]]
                       + [round(100 * results["methods"][n]["ood_by_set"][s], 1) for n in names]
                       + [f"{100 * v['lp_minus_ft']:+.1f} ± {100 * v['noise']:.1f}", "yes" if v["features_good"] else "no"])
    rep.table(per_set, ["OOD set", "kind", "images"] + [_label(n) for n in names] + ["LP − FT", "features good?"])
    if cfg.corruptions:
        rep.figure(severity_curves(results, cfg), "accuracy_vs_severity",
                   "Accuracy on the clean test split and at each severity, averaged over the corruptions.")
    rep.heading("Fine-tuning runs")
    diag = []
    for name, m in results["methods"].items():
        if "val_accuracy_by_epoch" not in m:
            continue
        p = m["plateau"]
        diag.append([_label(name), f"{m['lr']:g}", m["head_norm"], round(m["first_epoch_loss"], 3),
                     " → ".join(f"{100 * a:.1f}" for a in m["val_accuracy_by_epoch"]),
                     "—" if p["reached"] is None else ("yes" if p["reached"] else "no")])
    rep.table(diag, ["method", "lr", "start head norm", "epoch-1 loss", "val acc % by epoch", "plateau reached"])
    rep.paragraph(f"The start head norm is the Frobenius norm of the head fine-tuning starts from (LP's head for "
                  f"LP-FT, a fresh one for FT); the epoch-1 loss is the mean training loss of the first epoch "
                  f"(ln {c['num_classes']} = {np.log(c['num_classes']):.2f} is chance). {plateau_text(results)}")
    if any(n.startswith("lpft+") for n in results["methods"]):
        rep.paragraph(mixer_text(results))
    rep.heading("Feature change")
    rep.figure(feature_change_bars(results), "feature_change",
               "Mean squared change of the penultimate features against the pretrained backbone (log scale).")
    if probe:
        rep.heading("Linear probe")
        i_head = probe["Cs"].index(probe["head_C"]) if probe.get("head_C") in probe["Cs"] else None
        i_best = probe["Cs"].index(probe["best_C"])
        if i_head is not None and i_head != i_best:
            rep.paragraph(
                f"The sweep's best validation accuracy is at C = {probe['best_C']:.3g} "
                f"({100 * probe['val_accuracy'][i_best]:.2f}%, val loss {probe['val_loss'][i_best]:.3f}, head norm "
                f"{probe['head_norm'][i_best]:.3g}); the head used, at C = {probe['head_C']:.3g}, has "
                f"{100 * probe['val_accuracy'][i_head]:.2f}% (within one standard error, "
                f"{100 * probe['accuracy_margin']:.2f} points), val loss {probe['val_loss'][i_head]:.3f} and norm "
                f"{probe['head_norm'][i_head]:.3g}.")
        rep.figure(probe_path(probe), "probe_path",
                   f"Validation accuracy and losses along the C grid; {sum(probe['n_iter'])} solver "
                   f"iterations in all, {sum(probe['converged'])}/{len(probe['Cs'])} converged.")
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
