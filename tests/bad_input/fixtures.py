"""What the cases need, built lazily in the worker: arrays, files, tiny models, loaders, caches,
and ``cli`` to run a command the way a user does."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile

import numpy as np
import torch
from torch import nn


def fresh_dir() -> str:
    """A new empty folder under the worker's own temporary folder (its working directory)."""
    return tempfile.mkdtemp(dir=os.getcwd())


def blobs(n: int = 60, d: int = 5, k: int = 3, seed: int = 0):
    """``(X float32 (n, d), y int64 (n,))``, separable enough to fit in a few iterations."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.standard_normal((n, d)).astype(np.float32) + y[:, None].astype(np.float32)
    return X, y.astype(np.int64)


def save_npy(array, name: str = "a.npy", folder: str | None = None) -> str:
    path = os.path.join(folder or fresh_dir(), name)
    np.save(path, np.asarray(array))
    return path


def tiny_model(num_classes: int = 3, size: int = 4):
    """A ``FeatureModel`` on ``(N, 3, size, size)`` images with 6-d features."""
    from pyrobust.models import FeatureModel

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 6))
    return FeatureModel(backbone, 6, num_classes)


def image_dataset(n: int = 12, num_classes: int = 3, size: int = 4, labels=None):
    from pyrobust.data import ArrayDataset

    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=g)
    labels = torch.arange(n) % num_classes if labels is None else labels
    return ArrayDataset(images, labels)


def loader(n: int = 12, num_classes: int = 3, size: int = 4, batch_size: int = 4, labels=None):
    return torch.utils.data.DataLoader(image_dataset(n, num_classes, size, labels), batch_size=batch_size)


def batches(images: torch.Tensor, labels: torch.Tensor):
    """A one-batch "loader" that yields exactly ``(images, labels)``, shapes as given."""
    return [(images, labels)]


@functools.lru_cache(maxsize=None)
def _cache_template() -> str:
    from pyrobust.features import extract_features

    path = os.path.join(fresh_dir(), "cache")
    extract_features(tiny_model(), image_dataset(10), path, batch_size=4, device="cpu",
                     dtype=torch.float32, progress=False)
    return path


def cache_copy() -> str:
    """A finished feature cache (10 rows, 6 float32 features, chunks of 4), copied to a new folder."""
    import shutil

    path = os.path.join(fresh_dir(), "cache")
    shutil.copytree(_cache_template(), path)
    return path


class CommandFailed(AssertionError):
    """The command broke its contract (not exit 2 with one line on stderr and nothing on stdout)."""


class CommandError(ValueError):
    """The command refused the input as promised; the message is its one stderr line."""


def cli(*argv: str):
    """Run ``pyrobust ARGV``; raise :class:`CommandError` (the stderr line) when it exits 2 with one
    stderr line and nothing on stdout, :class:`CommandFailed` otherwise; return stdout on exit 0."""
    from pyrobust.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # noqa: BLE001 - a traceback is the contract broken
            raise CommandFailed(f"raised {type(exc).__name__}: {exc}; stderr: {err.getvalue()[-500:]}") from None
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        return out.getvalue()
    if code == 2 and len(lines) == 1 and not out.getvalue():
        raise CommandError(lines[0])
    raise CommandFailed(f"exit {code}, stdout {out.getvalue()[-300:]!r}, stderr {err.getvalue()[-800:]!r}")
