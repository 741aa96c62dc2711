"""Datasets and the corruption suite: what the studies train and evaluate on.

Every dataset yields ``(float32 image (C, H, W) in [0, 1], int label)``; backbone normalisation
is left to the model adapter (:class:`pyrobust.models.FeatureModel`).

- :func:`get_dataset` — ``"digits"`` (embedded, scikit-learn), ``"fashion-mnist"`` (IDX files of
  the Debian package ``dataset-fashion-mnist`` or ``$PYROBUST_DATA``) or an image folder, as
  ``{"train", "val", "test"}``.
- :func:`load_digits_splits`, :func:`load_fashion_mnist`, :func:`read_idx`,
  :class:`ArrayDataset` (numpy / tensors), :class:`ImageFolderDataset`.
- :func:`corrupt`, :data:`CORRUPTIONS`, :data:`SEVERITY_PARAMS` — ImageNet-C style corruptions at
  severities 1–5; :class:`CorruptedDataset`; :func:`mean_corruption_error`.
"""

from pyrobust.data.corrupted import CorruptedDataset, mean_corruption_error
from pyrobust.data.corruptions import CORRUPTIONS, SEVERITY_PARAMS, corrupt
from pyrobust.data.digits import DIGITS_SPLIT_SIZES, load_digits_splits
from pyrobust.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    DatasetNotFoundError,
    find_fashion_mnist,
    load_fashion_mnist,
)
from pyrobust.data.generic import ArrayDataset, ImageFolderDataset
from pyrobust.data.idx import read_idx
from pyrobust.data.registry import DATASET_NAMES, get_dataset

__all__ = [
    "ArrayDataset",
    "CORRUPTIONS",
    "CorruptedDataset",
    "DATASET_NAMES",
    "DIGITS_SPLIT_SIZES",
    "DatasetNotFoundError",
    "FASHION_MNIST_CLASSES",
    "ImageFolderDataset",
    "SEVERITY_PARAMS",
    "corrupt",
    "find_fashion_mnist",
    "get_dataset",
    "load_digits_splits",
    "load_fashion_mnist",
    "mean_corruption_error",
    "read_idx",
]
