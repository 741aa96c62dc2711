"""Exceptions shared across pyrobust's packages, and the usage checks the commands share."""

from __future__ import annotations

import os


class UsageError(ValueError):
    """A mistake in what the user asked for (unknown name, missing path, bad config).

    The ``pyrobust`` command prints it in one line and exits with status 2.
    """


def check_dataset(name: str) -> None:
    """A known dataset name or a folder of class sub-folders, else :class:`UsageError`."""
    from pyrobust.data import DATASET_NAMES

    if name not in DATASET_NAMES and not os.path.isdir(name):
        what = "does not exist" if not os.path.exists(name) else "is not a folder"
        raise UsageError(
            f"dataset {name!r} is neither a known name ({', '.join(DATASET_NAMES)}) nor a folder "
            f"of class sub-folders (that path {what})"
        )


def check_out_folder(path: str) -> None:
    """An output path that is a folder or does not exist yet, else :class:`UsageError`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"output folder {path!r} exists and is a file; give a folder path with --out")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` where available else ``cpu``; ``cpu``, ``cuda`` or ``cuda:N`` checked."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but no CUDA device is available")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
