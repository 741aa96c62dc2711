"""The former home of :mod:`pyrobust.lpft.run`; its names still import from here."""

from pyrobust.lpft.run import METHODS, LPFTStudy, run_lpft

__all__ = ["METHODS", "LPFTStudy", "run_lpft"]
