"""Feature cache: run a frozen backbone once, keep its features on disk.

Linear probing (and the LP step of LP-FT) only needs the frozen backbone's features, so the expensive forward pass is
done once per (weights, data, layer, dtype) and stored as raw ``.npy`` memory maps. The store is keyed by what
determines its content, resumes after an interruption at chunk granularity, and checks a blake2b checksum per chunk
so that a damaged file is never handed back silently. See :func:`extract_features` for the on-disk format.
"""

from pyrobust.features.extract import extract_features
from pyrobust.features.fingerprint import dataset_fingerprint, transform_repr, weights_fingerprint
from pyrobust.features.store import FORMAT_VERSION, CacheCorrupted, CacheKeyMismatch, FeatureCache

__all__ = [
    "FORMAT_VERSION",
    "CacheCorrupted",
    "CacheKeyMismatch",
    "FeatureCache",
    "dataset_fingerprint",
    "extract_features",
    "transform_repr",
    "weights_fingerprint",
]
