"""Which regime the study's data are in: are the pretrained features good on the shifted inputs?

The LP-FT paper's theory assumes pretrained features that are good on the ID *and* the OOD inputs;
then fine-tuning from a fresh head distorts them and LP-FT keeps OOD accuracy that FT loses. LP's ID
accuracy does not test that premise. LP's OOD accuracy does: LP classifies the shifted inputs with
the pretrained features left as they are, FT with features changed by training on ID data. So the
criterion is LP's OOD accuracy against FT's:

- LP within noise of FT or above it: fine-tuning on ID data made the features no better on the
  shifted inputs, so the pretrained ones are good there: the premise holds.
- FT above LP by more than the noise: fine-tuning repaired features that were poor on the shifted
  inputs: the premise does not hold, and the theory says nothing against FT winning OOD.

The noise is two standard errors of the difference of two accuracies on ``n`` images,
``2 sqrt((p_LP (1 - p_LP) + p_FT (1 - p_FT)) / n)``, with ``n`` a set's size; for a mean over several
sets, ``n`` is their mean size (corrupted copies of one test split are not independent samples, so
adding their sizes would understate the noise). Two measures are reported beside the verdict without
deciding it: each method's ID - OOD gap, and how far FT moved the features on OOD inputs against ID ones
(the theory expects less on OOD).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CRITERION", "accuracy_difference_noise", "regime_verdict", "set_verdict"]

CRITERION = ("LP's OOD accuracy against FT's: the pretrained features are good on the shifted data when LP, with "
             "the backbone frozen, is within two standard errors of FT or above it")


def accuracy_difference_noise(p1: float, p2: float, n: float) -> float:
    """Two standard errors of ``p1 - p2``, two accuracies on ``n`` images each."""
    if not n > 0:
        raise ValueError(f"n must be > 0, got {n!r}")
    return 2.0 * math.sqrt((p1 * (1.0 - p1) + p2 * (1.0 - p2)) / n)


def set_verdict(lp: float, ft: float, n: float) -> dict:
    """The criterion on one set (or one mean of sets): accuracies as fractions, ``n`` images."""
    noise = accuracy_difference_noise(lp, ft, n)
    return {"lp": lp, "ft": ft, "lp_minus_ft": lp - ft, "noise": noise, "n": n,
            "features_good": bool(lp - ft >= -noise)}


def _mean(values) -> float:
    return float(np.mean(list(values)))


def regime_verdict(methods: dict, feature_change: dict, set_sizes: dict, groups: dict,
                   ft_plateau: dict | None = None) -> dict:
    """The ``regime`` section of ``results.json``.

    Args:
        methods: ``results["methods"]`` (``lp`` and ``ft`` entries with ``id_accuracy``, ``ood_accuracy``,
            ``ood_by_set``).
        feature_change: ``results["feature_change"]`` (``ft`` entry with ``id``, ``ood``).
        set_sizes: images in each OOD set.
        groups: ``{"natural": [set names], "corrupted": [set names]}`` (a group may be empty).
        ft_plateau: FT's :func:`pyrobust.study.plateau.plateau_status`, for the caveat when FT stopped short.
    """
    lp, ft = methods["lp"], methods["ft"]
    names = list(set_sizes)
    overall = set_verdict(lp["ood_accuracy"], ft["ood_accuracy"], _mean(set_sizes.values()))
    by_set = {s: set_verdict(lp["ood_by_set"][s], ft["ood_by_set"][s], set_sizes[s]) for s in names}
    by_group = {}
    for group, members in groups.items():
        if members:
            by_group[group] = set_verdict(_mean(lp["ood_by_set"][s] for s in members),
                                          _mean(ft["ood_by_set"][s] for s in members),
                                          _mean(set_sizes[s] for s in members))
    ch = feature_change.get("ft", {})
    change_ratio = ch["ood"] / ch["id"] if ch.get("id") else float("nan")
    doc = {
        "criterion": CRITERION,
        "features_good_on_shift": overall["features_good"],
        "paper_premise_holds": overall["features_good"],
        **{k: overall[k] for k in ("lp_minus_ft", "noise", "n")},
        "lp_ood_accuracy": lp["ood_accuracy"],
        "ft_ood_accuracy": ft["ood_accuracy"],
        "lp_id_ood_gap": lp["id_accuracy"] - lp["ood_accuracy"],
        "ft_id_ood_gap": ft["id_accuracy"] - ft["ood_accuracy"],
        "ft_feature_change_ood_over_id": change_ratio,
        "ft_stopped_short": bool(ft_plateau is not None and ft_plateau.get("reached") is False),
        "by_group": by_group,
        "by_set": by_set,
    }
    doc["summary"] = regime_text(doc)
    return doc


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def regime_text(doc: dict) -> str:
    """The verdict in words, every number taken from ``doc``."""
    lp, ft, d, noise = doc["lp_ood_accuracy"], doc["ft_ood_accuracy"], doc["lp_minus_ft"], doc["noise"]
    if doc["features_good_on_shift"]:
        words = [f"The pretrained features are good on the shifted data: LP, with the backbone frozen, reaches "
                 f"{_pct(lp)} mean OOD accuracy against FT's {_pct(ft)} ({100 * d:+.1f} points; noise ±"
                 f"{100 * noise:.1f}). This is the paper's premise, the regime its theory covers: fine-tuning from "
                 f"a fresh head is expected to distort the features, and LP-FT to keep the OOD accuracy FT loses."]
    else:
        words = [f"The pretrained features are not good on the shifted data: FT, which changes them, reaches "
                 f"{_pct(ft)} mean OOD accuracy against {_pct(lp)} for LP with the backbone frozen "
                 f"({100 * -d:.1f} points, beyond the noise of ±{100 * noise:.1f}). The paper's premise (features "
                 f"good on the shifted inputs) does not hold here, so its theory does not predict LP-FT ≥ FT on "
                 f"OOD, and FT winning OOD does not contradict it."]
    groups = doc["by_group"]
    if len(groups) > 1:
        words.append("By kind of shift: " + "; ".join(
            f"{g} sets LP {_pct(v['lp'])} vs FT {_pct(v['ft'])} "
            f"({'features good' if v['features_good'] else 'features not good'})" for g, v in groups.items()) + ".")
    words.append(f"From ID to OOD, LP loses {100 * doc['lp_id_ood_gap']:.1f} points and FT "
                 f"{100 * doc['ft_id_ood_gap']:.1f}")
    ratio = doc["ft_feature_change_ood_over_id"]
    if math.isfinite(ratio):
        words[-1] += (f"; FT moved the features on OOD inputs {ratio:.2f}× as much as on ID inputs "
                      f"(the theory has FT change them less on OOD inputs).")
    else:
        words[-1] += "."
    if doc["ft_stopped_short"]:
        words.append("FT had not reached its plateau (its last epoch still raised its validation accuracy by more "
                     "than the noise), so more training could move its side of the comparison.")
    return " ".join(words)
