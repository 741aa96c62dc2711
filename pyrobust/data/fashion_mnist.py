"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 70,000 grey 28×28 images of 10 clothing classes.

The data are the original IDX files, as installed by the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``) or copied
anywhere by the user. The folder is searched in this order:

1. ``root`` when given;
2. ``$PYROBUST_DATA/fashion-mnist``, then ``$PYROBUST_DATA`` itself, when ``PYROBUST_DATA`` is set;
3. :data:`DEBIAN_ROOT`.

In each folder the files may be gzip-compressed (``.gz``) or plain, and may also sit under the
torchvision layout ``FashionMNIST/raw``. Splits: ``"train"`` (60,000) and ``"test"`` (10,000).
"""

from __future__ import annotations

import os

from pyrobust.data.generic import ArrayDataset
from pyrobust.data.idx import read_idx

__all__ = ["load_fashion_mnist", "find_fashion_mnist", "FASHION_MNIST_CLASSES", "DEBIAN_ROOT", "DatasetNotFoundError"]

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_PREFIX = {"train": "train", "test": "t10k"}


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset's files are not where they were looked for (both a FileNotFoundError and a ValueError)."""


def _candidates(root):
    if root is not None:
        return [os.fspath(root)]
    env = os.environ.get("PYROBUST_DATA")
    out = [os.path.join(env, "fashion-mnist"), env] if env else []
    return out + [DEBIAN_ROOT]


def _find_file(folder: str, stem: str) -> str | None:
    for sub in ("", os.path.join("FashionMNIST", "raw")):
        for name in (stem + ".gz", stem):
            p = os.path.join(folder, sub, name)
            if os.path.isfile(p):
                return p
    return None


def find_fashion_mnist(root=None) -> str:
    """The first folder (see the module docstring) that holds all four Fashion-MNIST IDX files.

    Raises:
        DatasetNotFoundError: none does; the message lists the folders searched and how to get the data.
    """
    tried = _candidates(root)
    for folder in tried:
        stems = [f"{p}-{k}" for p in _PREFIX.values() for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
        if all(_find_file(folder, s) for s in stems):
            return folder
    raise DatasetNotFoundError(
        f"Fashion-MNIST IDX files not found in {', '.join(repr(t) for t in tried)}; install the Debian package "
        f"'dataset-fashion-mnist', set PYROBUST_DATA, or pass root= a folder with "
        f"train-images-idx3-ubyte[.gz] and its three companions"
    )


def load_fashion_mnist(root=None, split: str = "train", *, image_size=None, channels: int = 3) -> ArrayDataset:
    """Fashion-MNIST ``split`` as an :class:`ArrayDataset` (``uint8`` storage, resized on access).

    Args:
        root: folder with the IDX files; ``None`` searches as the module docstring says.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        image_size: output size (int or ``(H, W)``); ``None`` keeps 28×28.
        channels: 3 (grey replicated, for ImageNet backbones) or 1.

    Items: float32 ``(channels, H, W)`` in ``[0, 1]`` and an int label in ``0..9``
    (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ValueError: unknown ``split``; the IDX files are malformed or images and labels disagree.
        DatasetNotFoundError: the files are not found.
    """
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist(root)
    prefix = _PREFIX[split]
    images = read_idx(_find_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: Fashion-MNIST {split} images {images.shape} and labels {labels.shape} do not match"
        )
    return ArrayDataset(images, labels, image_size=image_size, channels=channels, classes=FASHION_MNIST_CLASSES)
