"""Did a fine-tuning run reach its plateau? A run's validation accuracy per epoch, read against its noise.

A run has reached its plateau when its last epoch raised the validation accuracy by no more than one
standard error of that accuracy (:func:`pyrobust.study.lp_head.accuracy_margin`): more epochs would
then be expected to change the comparison by less than the noise. A run of one epoch cannot tell.
"""

from __future__ import annotations

from pyrobust.study.lp_head import accuracy_margin

__all__ = ["plateau_status"]


def plateau_status(val_accuracy_by_epoch, n_val: int) -> dict:
    """``{"reached": bool or None, "last_gain": float or None, "noise": float, "epochs": int}``.

    ``reached`` is None when there is one epoch only; ``last_gain`` is the last epoch's change of the
    validation accuracy (a fraction), ``noise`` one standard error of the final accuracy."""
    curve = [float(a) for a in val_accuracy_by_epoch or []]
    noise = accuracy_margin(curve[-1], n_val) if curve else float("nan")
    if len(curve) < 2:
        return {"reached": None, "last_gain": None, "noise": noise, "epochs": len(curve)}
    gain = curve[-1] - curve[-2]
    return {"reached": bool(gain <= noise), "last_gain": gain, "noise": noise, "epochs": len(curve)}
