"""The embedded default dataset: scikit-learn's handwritten digits, split and resized for ImageNet backbones.

``sklearn.datasets.load_digits`` ships 1,797 real 8×8 grey images of the digits 0–9 (UCI "Optical
Recognition of Handwritten Digits", pixel values 0–16) inside scikit-learn, so the default study
needs no download. The split is stratified by class with a fixed seed; its default sizes,
1,000 train / 300 validation / 497 test, are those of the baseline study in REFERENCES.md §4.
Pixels are scaled to ``[0, 1]`` (value / 16), resized bilinearly to ``image_size`` and replicated
to 3 channels on access.
"""

from __future__ import annotations

import numpy as np

from pyrobust.checks import check_int
from pyrobust.data.generic import ArrayDataset

__all__ = ["load_digits_splits", "DIGITS_SPLIT_SIZES"]

DIGITS_SPLIT_SIZES = {"train": 1000, "val": 300, "test": 497}


def load_digits_splits(image_size=64, seed: int = 0, *, channels: int = 3, sizes=None) -> dict[str, ArrayDataset]:
    """scikit-learn digits as ``{"train", "val", "test"}`` datasets.

    Args:
        image_size: output size, int or ``(H, W)`` (default 64); ``None`` keeps 8×8.
        seed: seed of the stratified split (same seed → same split).
        channels: 3 (default, grey replicated) or 1.
        sizes: ``{"train": n, "val": n, "test": n}`` summing to at most 1,797; default
            :data:`DIGITS_SPLIT_SIZES`.

    Items: float32 ``(channels, H, W)`` in ``[0, 1]``, int label 0–9.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if sizes is not None and (not isinstance(sizes, dict) or set(sizes) != {"train", "val", "test"}):
        raise ValueError(f"sizes must be a dict giving the 'train', 'val' and 'test' sizes, got {sizes!r}")
    sizes = dict(DIGITS_SPLIT_SIZES if sizes is None else sizes)
    for name, v in sizes.items():  # every split is stratified: at least one image per digit
        check_int(v, f"sizes[{name!r}]", min=10)
    check_int(seed, "seed", min=0)
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    n = len(labels)
    if sum(sizes.values()) > n:
        raise ValueError(f"split sizes {sizes} add up to more than the {n} digits images")
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=sizes["test"], random_state=seed, stratify=labels)
    train, val = train_test_split(
        rest, train_size=sizes["train"], test_size=sizes["val"], random_state=seed + 1, stratify=labels[rest]
    )
    full = ArrayDataset(images, labels, image_size=image_size, channels=channels,
                        classes=[str(i) for i in range(10)])
    return {name: full.subset(np.sort(part)) for name, part in (("train", train), ("val", val), ("test", test))}
