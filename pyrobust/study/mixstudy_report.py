"""Summaries, verdict and report page of the mixing study.

Numbers (all accuracies and errors are fractions in [0, 1]; error = 1 − accuracy):

- ``mce``: the mean corruption error, the plain mean of the error over corruptions and severities
  (:func:`pyrobust.data.mean_corruption_error` without baseline);
- ``relative_mce``: the SmoothMix paper's normalisation, mCE relative to CutMix trained with the
  same seed, ``mean_c (Σ_s E[c][s] / Σ_s E_CutMix[c][s])`` — 1.0 is CutMix, below 1 is more robust;
- both are computed per seed and then averaged; ``*_std`` is the sample standard deviation over
  seeds (0 with one seed: no spread was measured, which the report says).
"""

from __future__ import annotations

import math
import statistics

from pyrobust.data import mean_corruption_error

__all__ = ["summarise", "verdict", "write_report", "FAMILIES", "terminal_table"]

# ImageNet-C's grouping (Hendrycks & Dietterich 2019), restricted to the corruptions pyrobust has.
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "gaussian_blur", "motion_blur"),
    "weather": ("fog", "brightness"),
    "digital": ("contrast", "pixelate", "jpeg"),
}


def _mean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def _std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _errors(corrupted: dict) -> dict:
    return {c: [1.0 - a for a in accs] for c, accs in corrupted.items()}


def summarise(per_seed: dict, mixers: list, seeds: list) -> dict:
    """``per_seed[(mixer, seed)]`` = ``{"clean", "corrupted", "cam": {...}, "train": {...}}`` → results["mixers"]."""
    baseline = "cutmix" if "cutmix" in mixers else None
    out = {}
    for name in mixers:
        rows = []
        for seed in seeds:
            r = per_seed[(name, seed)]
            err = _errors(r["corrupted"])
            row = {
                "seed": seed,
                "clean_accuracy": r["clean"],
                "corruption_accuracy": r["corrupted"],
                "mce": mean_corruption_error(err),
                "relative_mce": None,
                "cam_mass_in_patch": r["cam"]["mass_hard"],
                "cam_mass_in_patch_soft": r["cam"]["mass_soft"],
                "patch_prediction_rate": r["cam"]["donor_rate_hard"],
                "train": r["train"],
            }
            if baseline is not None:
                base_err = _errors(per_seed[(baseline, seed)]["corrupted"])
                try:
                    row["relative_mce"] = mean_corruption_error(err, base_err)
                except ValueError:  # a corruption CutMix never got wrong: the ratio is undefined
                    row["relative_mce"] = None
            rows.append(row)
        corr = {c: [_mean([row["corruption_accuracy"][c][s] for row in rows])
                    for s in range(len(rows[0]["corruption_accuracy"][c]))]
                for c in rows[0]["corruption_accuracy"]}
        out[name] = {
            "clean_accuracy": _mean([r["clean_accuracy"] for r in rows]),
            "clean_accuracy_std": _std([r["clean_accuracy"] for r in rows]),
            "corruption_accuracy": corr,
            "corruption_accuracy_std": {c: [_std([row["corruption_accuracy"][c][s] for row in rows])
                                            for s in range(len(v))] for c, v in corr.items()},
            "mce": _mean([r["mce"] for r in rows]),
            "mce_std": _std([r["mce"] for r in rows]),
            "relative_mce": _mean([r["relative_mce"] for r in rows]) if baseline else None,
            "relative_mce_std": _std([r["relative_mce"] for r in rows]) if baseline else None,
            "cam_mass_in_patch": _mean([r["cam_mass_in_patch"] for r in rows]),
            "cam_mass_in_patch_std": _std([r["cam_mass_in_patch"] for r in rows]),
            "cam_mass_in_patch_soft": _mean([r["cam_mass_in_patch_soft"] for r in rows]),
            "patch_prediction_rate": _mean([r["patch_prediction_rate"] for r in rows]),
            "train_images_per_s": _mean([r["train"]["images_per_s"] for r in rows]),
            "per_seed": rows,
        }
    return out


def verdict(mixers: dict, n_seeds: int) -> list:
    """Plain sentences comparing each SmoothMix variant with CutMix (clean accuracy and mCE)."""
    if "cutmix" not in mixers:
        return ["CutMix was not trained, so SmoothMix is not compared with it (add cutmix to --mixers)."]
    smooth = [m for m in mixers if m.startswith("smoothmix")]
    if not smooth:
        return ["No SmoothMix variant was trained, so the SmoothMix claim is not tested here."]
    cut = mixers["cutmix"]
    lines = []
    for name in smooth:
        s = mixers[name]
        diffs = [a["mce"] - b["mce"] for a, b in zip(s["per_seed"], cut["per_seed"])]
        d = sum(diffs) / len(diffs)
        sd = _std(diffs)
        dclean = s["clean_accuracy"] - cut["clean_accuracy"]
        wins = sum(x < 0 for x in diffs)
        if n_seeds > 1:
            spread = (f"paired difference {100 * d:+.2f} ± {100 * sd:.2f} points over {n_seeds} seeds "
                      f"(mean ± sd; lower is better for {name}), lower in {wins} of {n_seeds} seeds")
            noisy = abs(d) <= sd
        else:
            spread = (f"difference {100 * d:+.2f} points from a single seed: no seed spread was measured, "
                      f"so a gap of this size may be noise (run with --seeds 3 or more)")
            noisy = abs(d) < 0.005
        if n_seeds == 1:
            head = (f"{name} had a {'lower' if d < 0 else 'higher'} mCE than CutMix in this single-seed run "
                    f"({'better' if d < 0 else 'it did not beat CutMix'}, but unconfirmed)")
        elif d < 0 and not noisy:
            head = f"{name} beat CutMix under corruptions here"
        elif d < 0:
            head = f"{name} had a lower mCE than CutMix here, but within the seed spread"
        elif noisy:
            head = f"{name} did not beat CutMix under corruptions here (the gap is within the seed spread)"
        else:
            head = f"{name} did NOT beat CutMix under corruptions here"
        lines.append(
            f"{head}: mCE {100 * s['mce']:.2f} % vs {100 * cut['mce']:.2f} % ({spread}); relative mCE "
            f"{s['relative_mce']:.3f} (CutMix = 1). Clean accuracy {100 * s['clean_accuracy']:.2f} % vs "
            f"{100 * cut['clean_accuracy']:.2f} % ({100 * dclean:+.2f} points)."
            if s["relative_mce"] is not None else f"{head}: mCE {100 * s['mce']:.2f} % vs {100 * cut['mce']:.2f} %."
        )
        better = [c for c in s["corruption_accuracy"]
                  if sum(s["corruption_accuracy"][c]) > sum(cut["corruption_accuracy"][c])]
        lines.append(f"{name} was more accurate than CutMix on {len(better)} of {len(s['corruption_accuracy'])} "
                     f"corruptions ({', '.join(better) or 'none'}).")
    masses = {n: mixers[n]["cam_mass_in_patch"] for n in ["cutmix", *smooth]}
    if all(v is not None for v in masses.values()):
        more = all(masses["cutmix"] > masses[n] for n in smooth)
        lines.append(
            "Strong-edge check (the paper's explanation): CutMix should put more Grad-CAM mass inside a "
            "hard-edged pasted patch than SmoothMix. Share of CAM mass in the patch: "
            + ", ".join(f"{n} {v:.3f}" for n, v in masses.items())
            + (" — consistent with that explanation." if more else " — this data does not show that effect.")
        )
    return lines


def _pct(x, digits=2):
    return None if x is None else round(100 * x, digits)


def summary_rows(mixers: dict):
    rows = []
    for name, m in mixers.items():
        rows.append([
            name, _pct(m["clean_accuracy"]), _pct(m["clean_accuracy_std"]), _pct(m["mce"]), _pct(m["mce_std"]),
            "-" if m["relative_mce"] is None else round(m["relative_mce"], 3),
            "-" if m["cam_mass_in_patch"] is None else round(m["cam_mass_in_patch"], 3),
            "-" if m["cam_mass_in_patch_soft"] is None else round(m["cam_mass_in_patch_soft"], 3),
            round(m["train_images_per_s"]),
        ])
    cols = ["mixer", "clean acc %", "± sd", "mCE %", "± sd", "rel. mCE (CutMix=1)", "CAM mass in patch (hard)",
            "CAM mass in patch (soft)", "train img/s"]
    return rows, cols


def terminal_table(mixers: dict) -> str:
    from pyrobust.report import format_table

    rows, cols = summary_rows(mixers)
    return format_table(rows, cols)


def _corruption_rows(mixers: dict):
    names = list(mixers)
    first = next(iter(mixers.values()))
    rows = []
    for c in first["corruption_accuracy"]:
        rows.append([c] + [_pct(1 - _mean(mixers[m]["corruption_accuracy"][c])) for m in names])
    rows.append(["mCE"] + [_pct(mixers[m]["mce"]) for m in names])
    if "cutmix" in mixers:
        rows.append(["relative mCE (CutMix = 1)"] + [
            "-" if mixers[m]["relative_mce"] is None else round(mixers[m]["relative_mce"], 3) for m in names])
    return rows, ["corruption (error %, mean over severities)"] + names


def _severity_figure(mixers: dict, severities: list):
    from pyrobust.report import new_figure

    present = {f: [c for c in cs if c in next(iter(mixers.values()))["corruption_accuracy"]]
               for f, cs in FAMILIES.items()}
    present = {f: cs for f, cs in present.items() if cs}
    fig = new_figure(3.2 * len(present), 3.2)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    xs = [0] + list(severities)
    for ax, (family, cs) in zip(axes, present.items()):
        for name, m in mixers.items():
            ys = [m["clean_accuracy"]] + [_mean([m["corruption_accuracy"][c][i] for c in cs])
                                          for i in range(len(severities))]
            sd = [m["clean_accuracy_std"]] + [_mean([m["corruption_accuracy_std"][c][i] for c in cs])
                                              for i in range(len(severities))]
            ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * s for s in sd], marker="o", ms=3, capsize=2,
                        label=name, lw=1.5 if name.startswith(("cutmix", "smoothmix")) else 0.9)
        ax.set_title(f"{family}: {', '.join(cs)}", fontsize=8)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy %")
    axes[-1].legend(fontsize=7)
    return fig


def _cam_panel(probe: dict, cams: dict, n_show: int):
    """Rows: test images; columns: hard probe, its CAMs per model, soft probe, its CAMs per model."""
    import numpy as np
    from matplotlib.patches import Rectangle

    from pyrobust.report import new_figure

    names = list(cams)
    cols = 2 * (1 + len(names))
    n_show = min(n_show, probe["hard"].shape[0])
    fig = new_figure(1.5 * cols, 1.6 * n_show + 0.4)
    axes = fig.subplots(n_show, cols, squeeze=False)
    for r in range(n_show):
        top, left, bottom, right = probe["boxes"][r].tolist()
        for k, kind in enumerate(("hard", "soft")):
            img = probe[kind][r].float().mean(0).numpy()
            base = k * (1 + len(names))
            panels = [(img, None, f"{kind} patch")] + [(img, cams[n][f"cam_{kind}"][r].numpy(), n) for n in names]
            for j, (im, cam, title) in enumerate(panels):
                ax = axes[r, base + j]
                ax.imshow(im, cmap="gray", vmin=0, vmax=1)
                if cam is not None:
                    ax.imshow(np.asarray(cam), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                       edgecolor="white", lw=0.8, ls="--"))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(title, fontsize=7)
    return fig


def write_report(out_dir: str, results: dict, lines: list, probe: dict, panel_cams: dict, n_show: int) -> str:
    """``report.html`` (+ PNGs) in ``out_dir``; returns its path."""
    from pyrobust.report import Report

    cfg, mixers, timings = results["config"], results["mixers"], results["timings"]
    rep = Report("Mixing study: clean accuracy, corruption robustness and where the model looks")
    rep.paragraph(
        f"Dataset {cfg['dataset']} ({cfg['n_train']} training images, {cfg['n_test']} test images, "
        f"{cfg['image_size']} px, {cfg['channels']} channel(s)); model {cfg['model']} (width {cfg['width']}), "
        f"{cfg['epochs']} epoch(s), batch {cfg['batch_size']}, lr {cfg['lr']}, seeds {cfg['seeds']}. Every mixer "
        f"starts from the same initial weights and sees the same batches in the same order for a given seed."
    )
    if cfg.get("quick"):
        rep.note("--quick run: small data, few epochs, a subset of severities and test images; the numbers only "
                 "check that the pipeline works and say nothing about the methods.")
    rep.heading("Verdict")
    for line in lines:
        rep.note(line)
    rep.heading("Summary")
    rows, cols = summary_rows(mixers)
    rep.table(rows, cols)
    rep.paragraph(
        f"mCE: mean error over {len(cfg['corruptions'])} corruptions × severities {cfg['severities']} on "
        f"{cfg['n_corruption_test']} test images (the same images for every model). Relative mCE: "
        f"mean over corruptions of Σ_s error / Σ_s CutMix's error, per seed, as in the SmoothMix paper. "
        f"± sd: sample standard deviation over seeds (0 when only one seed was run). CAM mass in patch: "
        f"share of the Grad-CAM mass (predicted class, layer {cfg['cam_layer']}) inside a pasted square "
        f"patch covering {100 * cfg['patch_area_fraction']:.0f} % of the image, mean over "
        f"{cfg['cam_images']} test images; a map that ignored the patch entirely would give 0, a uniform "
        f"one {cfg['patch_area_fraction']:.2f}."
    )
    rep.heading("Per corruption")
    rows, cols = _corruption_rows(mixers)
    rep.table(rows, cols)
    rep.figure(_severity_figure(mixers, cfg["severities"]), "accuracy_vs_severity",
               "Accuracy against severity, averaged over the corruptions of each ImageNet-C family "
               "(error bars: sd over seeds).")
    rep.heading("Where the model looks: the hard-edge probe")
    rep.paragraph(
        "A square patch of another test image is pasted into each image with a hard edge (left block) and "
        "blended with a linear soft edge of width "
        f"{cfg['soft_edge']} × the image side (right block); the Grad-CAM of each model's predicted class "
        "is overlaid, the dashed square marks the patch. Rate at which the prediction becomes the patch "
        "donor's class (hard probe): " + ", ".join(
            f"{n} {100 * m['patch_prediction_rate']:.1f} %" for n, m in mixers.items()) + "."
    )
    rep.figure(_cam_panel(probe, panel_cams, n_show), "cam_panel",
               "Grad-CAM (jet, 0–1 per image) of " + " and ".join(panel_cams) + " on hard and soft patch probes.")
    rep.heading("Throughput")
    rows = [[n, round(timings["train_images_per_s"][n]), round(timings["mixing_only_images_per_s"].get(n) or 0),
             "-" if timings["slowdown_vs_none"].get(n) is None else round(timings["slowdown_vs_none"][n], 3),
             round(timings["data_wait_s"][n], 2)] for n in mixers]
    rep.table(rows, ["mixer", "training img/s", "mixing alone img/s (main process)",
                     "training time vs none", "s waiting for data"])
    rep.paragraph(
        f"Mixing runs in {cfg['workers']} DataLoader worker(s) through MixCollate; training used "
        f"{cfg['threads']} intra-op thread(s) on {cfg['device']}. Total wall time {timings['total_s']:.0f} s "
        f"(data {timings['data_s']:.0f} s, training {timings['train_total_s']:.0f} s, corruption evaluation "
        f"{timings['eval_s']:.0f} s, CAMs {timings['cam_s']:.0f} s)."
    )
    return rep.write(out_dir)
