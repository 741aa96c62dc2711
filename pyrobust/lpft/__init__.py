"""LP, FT and LP-FT (Kumar et al., ICLR 2022), WiSE-FT interpolation, and the run that compares them.

- :func:`linear_probe`: the LP head from cached features via the probe sweep (``LPFT_DEFAULTS``: the authors' grid
  and scalar standardisation).
- :func:`finetune`: full fine-tuning from a fresh head (FT) or the LP head (LP-FT); BatchNorm in eval mode,
  checkpoint / exact resume, early stopping, batch mixers, DDP under ``torchrun``.
- :func:`evaluate`: accuracy per named loader. :func:`interpolate` / :func:`wise_sweep`: WiSE-FT.
- :func:`run_lpft` (:mod:`pyrobust.lpft.run`): the three methods on the same data, one table of ID / OOD accuracy
  and feature change.
"""

from pyrobust.lpft.evaluate import evaluate
from pyrobust.lpft.finetune import finetune, lr_at, soft_cross_entropy
from pyrobust.lpft.probe_head import LPFT_DEFAULTS, linear_probe
from pyrobust.lpft.run import LPFTStudy, run_lpft
from pyrobust.lpft.wise import interpolate, wise_sweep

__all__ = [
    "LPFT_DEFAULTS",
    "LPFTStudy",
    "evaluate",
    "finetune",
    "interpolate",
    "linear_probe",
    "lr_at",
    "run_lpft",
    "soft_cross_entropy",
    "wise_sweep",
]
