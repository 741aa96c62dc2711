"""Fingerprints that key the feature cache: weights, dataset samples, transform description.

The weights fingerprint hashes every byte of every state_dict tensor (blake2b): a sampled hash would let a fine-tuned
model that differs only in unsampled entries reuse a stale cache. Full hashing runs at memory speed (about 1 GB/s),
e.g. ~20 ms for EfficientNet-Lite0's 18 MB, negligible next to one pass of the backbone over a dataset.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import torch
from torch import nn

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    # uint8 view works for every dtype, including bfloat16 which numpy cannot represent.
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def weights_fingerprint(model: nn.Module) -> str:
    """blake2b hex digest of ``model.state_dict()``: names, dtypes, shapes and all tensor bytes."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _update(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (tuple, list)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update(h, item)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _update(h, k)
            _update(h, obj[k])
    elif hasattr(obj, "tobytes") and hasattr(obj, "size"):  # PIL images
        h.update(f"I{getattr(obj, 'mode', '')}{obj.size}".encode())
        h.update(obj.tobytes())
    else:
        h.update(_ADDRESS.sub("", repr(obj)).encode())


def dataset_fingerprint(dataset, n_samples: int = 3) -> str:
    """Digest of ``len(dataset)`` and of ``n_samples`` items spread over it (first, middle, last, ...).

    A dataset with random transforms has no stable fingerprint, which is intended: its features are not cacheable.
    """
    n = len(dataset)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"len={n}".encode())
    if n:
        idx = sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, n_samples))})
        for i in idx:
            h.update(f"#{i}".encode())
            _update(h, dataset[i])
    return h.hexdigest()


def transform_repr(dataset) -> str:
    """``repr`` of the dataset's ``transform`` / ``target_transform`` (following ``.dataset`` of wrappers such as
    ``Subset``), with memory addresses removed so that it is stable across processes."""
    parts = []
    seen = 0
    obj = dataset
    while obj is not None and seen < 8:
        for attr in ("transform", "target_transform", "transforms"):
            t = getattr(obj, attr, None)
            if t is not None:
                parts.append(f"{type(obj).__name__}.{attr}={_ADDRESS.sub('', repr(t))}")
        obj = getattr(obj, "dataset", None)
        seen += 1
    return ";".join(parts)
