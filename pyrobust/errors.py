"""Exceptions shared across pyrobust's packages, and the usage checks the commands share."""

from __future__ import annotations

import argparse
import os


class UsageError(ValueError):
    """A mistake in what the user asked for (unknown name, missing path, bad config).

    The ``pyrobust`` command prints it in one line and exits with status 2.
    """


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (an unknown option, a value that is not a number) are one
    line on stderr with exit status 2, as every other usage mistake of the command; ``--help``
    shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_dataset(name: str) -> None:
    """A known dataset name or a folder of class sub-folders, else :class:`UsageError`."""
    from pyrobust.data import DATASET_NAMES

    if name not in DATASET_NAMES and not os.path.isdir(name):
        what = "does not exist" if not os.path.exists(name) else "is not a folder"
        raise UsageError(
            f"dataset {name!r} is neither a known name ({', '.join(DATASET_NAMES)}) nor a folder "
            f"of class sub-folders (that path {what})"
        )


def check_out_folder(path: str) -> str:
    """An output folder that exists or can be created; returns its absolute path, else :class:`UsageError`."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise UsageError(f"output folder should be a folder path, got {path!r}")
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"output folder {path!r} is a file, not a folder; give a folder path with --out")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"output folder {path!r} cannot be created: {parent!r} is a file")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output folder {path!r} cannot be created: {parent!r} is not writable")
    return path


def resolve_device(device=None, model=None) -> torch.device:
    """The ``torch.device`` to run on, checked before any work.

    ``None`` or ``"auto"``: the device of ``model``'s parameters when that is not the CPU, else CUDA
    where available, else the CPU. Otherwise a ``torch.device`` or a string such as ``"cpu"``,
    ``"cuda"`` or ``"cuda:1"``; :class:`UsageError` (a ``ValueError``) names a string that is not a
    device, or a CUDA device that this machine does not have.
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        p = next(model.parameters(), None) if model is not None else None
        if p is not None and p.device.type != "cpu":
            return p.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {device!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return dev
