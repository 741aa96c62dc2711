"""``get_dataset``: one entry point from a name or a folder to ``{"train", "val", "test"}`` datasets.

- ``"digits"``: scikit-learn's digits, 1,000 / 300 / 497 (:mod:`pyrobust.data.digits`).
- ``"fashion-mnist"``: the 60,000 training images minus a stratified, seeded validation split
  (default 5,000; ``val_size=0`` keeps all 60,000 for training and gives an empty ``"val"``)
  and the 10,000 test images (:mod:`pyrobust.data.fashion_mnist`).
- a folder: either ``train/``, ``test/`` (and optionally ``val/``) sub-folders, each holding
  one sub-folder per class, or class sub-folders directly, split 60 / 15 / 25 % (stratified,
  seeded; ``val_size`` overrides the validation fraction or count).

Errors a user can make (an unknown name, a missing path, a folder with no images) raise
``ValueError`` with one line that says what was wrong and what is accepted.
"""

from __future__ import annotations

import os

import numpy as np

from pyrobust.data.digits import load_digits_splits
from pyrobust.data.fashion_mnist import load_fashion_mnist
from pyrobust.checks import check_int
from pyrobust.data.generic import ImageFolderDataset, _check_channels, _size_pair

__all__ = ["get_dataset", "DATASET_NAMES"]

DATASET_NAMES = ("digits", "fashion-mnist")
_ALIASES = {"digits": "digits", "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist"}
_FOLDER_FRACTIONS = {"train": 0.60, "val": 0.15, "test": 0.25}


def _stratified_holdout(labels: np.ndarray, size, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) index arrays; ``size`` is a count or a fraction in (0, 1)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if not size:
        return idx, idx[:0]
    held = size if isinstance(size, int) else int(np.ceil(size * len(idx)))
    if held >= len(idx):
        raise ValueError(f"cannot hold out {size!r} of {len(idx)} images and keep any for training")
    counts = np.bincount(labels)
    n_cls = int((counts > 0).sum())
    # stratify only when every class can appear on both sides
    ok = counts[counts > 0].min() >= 2 and min(held, len(idx) - held) >= n_cls
    strat = labels if ok else None
    kept, held = train_test_split(idx, test_size=size, random_state=seed, stratify=strat)
    return np.sort(kept), np.sort(held)


def _check_val_size(val_size):
    if val_size is None:
        return
    if (isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or not np.isfinite(val_size)
            or val_size < 0):
        raise ValueError(f"val_size must be a count >= 0 or a fraction in (0, 1), got {val_size!r}")
    if isinstance(val_size, float) and val_size >= 1:
        raise ValueError(f"a fractional val_size must be below 1, got {val_size!r}")


def _folder_splits(root: str, image_size, channels: int, seed: int, val_size) -> dict:
    subdirs = {e.name for e in os.scandir(root) if e.is_dir()}
    if {"train", "test"} <= subdirs:
        train = ImageFolderDataset(os.path.join(root, "train"), image_size=image_size, channels=channels)
        test = ImageFolderDataset(os.path.join(root, "test"), image_size=image_size, channels=channels,
                                  classes=train.classes)
        if "val" in subdirs:
            val = ImageFolderDataset(os.path.join(root, "val"), image_size=image_size, channels=channels,
                                     classes=train.classes)
            return {"train": train, "val": val, "test": test}
        keep, held = _stratified_holdout(train.labels.numpy(), 0.15 if val_size is None else val_size, seed)
        return {"train": train.subset(keep), "val": train.subset(held), "test": test}
    full = ImageFolderDataset(root, image_size=image_size, channels=channels)
    labels = full.labels.numpy()
    rest, test = _stratified_holdout(labels, _FOLDER_FRACTIONS["test"], seed)
    val_part = _FOLDER_FRACTIONS["val"] / (1 - _FOLDER_FRACTIONS["test"]) if val_size is None else val_size
    keep, held = _stratified_holdout(labels[rest], val_part, seed + 1)
    return {"train": full.subset(rest[keep]), "val": full.subset(rest[held]), "test": full.subset(test)}


def get_dataset(name_or_path, image_size=64, *, channels: int = 3, seed: int = 0, root=None, val_size=None) -> dict:
    """Resolve a dataset name or folder to ``{"train": ds, "val": ds, "test": ds}``.

    Args:
        name_or_path: ``"digits"``, ``"fashion-mnist"`` or a folder (see the module docstring).
        image_size: output size of every image, int or ``(H, W)`` (default 64).
        channels: 3 (default; grey images replicated) or 1.
        seed: seed of every random split.
        root: Fashion-MNIST folder (default: ``PYROBUST_DATA`` or the Debian package's).
        val_size: validation size for Fashion-MNIST and folders, a count or a fraction.

    Each dataset yields float32 ``(channels, H, W)`` images in ``[0, 1]`` and int labels, and has a
    ``classes`` list.

    Raises:
        ValueError: unknown name, missing path, a file instead of a folder, no images, bad sizes;
            ``pyrobust.data.DatasetNotFoundError`` (also a ValueError) when Fashion-MNIST is absent.
    """
    _check_val_size(val_size)
    _size_pair(image_size)
    _check_channels(channels)
    check_int(seed, "seed", min=0)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a dataset name or a path, got {type(name_or_path).__name__}")
    key = _ALIASES.get(os.fspath(name_or_path).lower()) if isinstance(name_or_path, str) else None
    # names win over same-named folders in the working directory; write "./digits" for the folder
    if key == "digits":
        if val_size is not None:
            raise ValueError("val_size is fixed for 'digits' (1,000 / 300 / 497); use load_digits_splits(sizes=...)")
        return load_digits_splits(image_size=image_size, seed=seed, channels=channels)
    if key == "fashion-mnist":
        train = load_fashion_mnist(root, "train", image_size=image_size, channels=channels)
        test = load_fashion_mnist(root, "test", image_size=image_size, channels=channels)
        keep, held = _stratified_holdout(train.labels.numpy(), 5000 if val_size is None else val_size, seed)
        return {"train": train.subset(keep), "val": train.subset(held), "test": test}
    path = os.fspath(name_or_path)
    if not os.path.exists(path):
        raise ValueError(
            f"unknown dataset {path!r}: not one of {', '.join(DATASET_NAMES)} and no such file or folder"
        )
    if not os.path.isdir(path):
        raise ValueError(f"dataset path {path!r} is a file; expected a folder with one sub-folder per class")
    return _folder_splits(path, image_size, channels, seed, val_size)
