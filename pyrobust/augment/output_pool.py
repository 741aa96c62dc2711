"""Reusing a mixer's earlier outputs once nobody references them any more.

A fresh batch-sized CPU tensor costs more than the mix that fills it: PyTorch's CPU allocator
keeps no cache, glibc hands blocks this large back to the kernel on free, and first-touching
38.5 MB (64 x 3 x 224 x 224 float32) page by page takes longer than a whole blend pass. In a
training loop the previous batch's output is usually unreferenced by the time the next batch is
mixed, so its memory can simply be written again.

"Unreferenced" is decided from the storage's own count: the pool keeps one tensor per buffer and
hands the caller a separate tensor on the same storage (``detach()``, not a view). Every tensor
that shares the storage -- the caller's name for the result, a view of it, a tensor saved for
backward, one inside a list or a numpy array -- holds the storage, so a buffer is reused only when
the pool's own tensor is its sole holder and no Python object holds the storage itself. A storage
moved to shared memory (a DataLoader worker sending the result to the main process) may still be
read on the other side, so such a buffer leaves the pool instead.

Only plain CPU tensors are pooled: on a GPU the caching allocator already makes fresh outputs
cheap, and outputs that need autograd or are made while torch.compile traces use the functional
op (see ``BatchMixer.mix``).
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import Optional

import torch

from pyrobust.ops.mix import suggest_memory_format

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _holders(storage: torch.UntypedStorage) -> tuple:
    """(C++ holders of a storage, Python references to its storage object)."""
    return _use_count(storage._cdata), sys.getrefcount(storage)


def _unreferenced_baseline() -> Optional[tuple]:
    """What ``_holders`` reads for a tensor that nobody else references (it depends on how
    torch keeps the storage's Python object); None where torch has no storage use count."""
    if _use_count is None:
        return None
    tensor = torch.empty(1)  # held as the pool holds its buffers
    storage = tensor.untyped_storage()
    return _holders(storage)


_FREE = _unreferenced_baseline()


class OutputPool:
    """Up to ``per_key`` output buffers for each of the ``keys`` most recent batch layouts.

    ``take(images)`` returns an uninitialised tensor laid out as the mixing op lays out its output
    for ``images`` (shape, dtype, contiguous or channels_last): an earlier buffer that nobody
    references any more, or a new one (always a new one for images the pool does not
    ``accept``). Two buffers per layout cover the loop that still holds
    the previous result while the next is made (``xm, t = mixer(x, y)``).
    """

    def __init__(self, per_key: int = 2, keys: int = 2) -> None:
        self.per_key = per_key
        self.keys = keys
        self._buffers: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def accepts(images: torch.Tensor) -> bool:
        """Whether an output for ``images`` may come from a pool: a plain CPU strided tensor."""
        return (_FREE is not None and type(images) is torch.Tensor and images.is_cpu
                and images.layout == torch.strided and images.dim() == 4)

    def take(self, images: torch.Tensor) -> torch.Tensor:
        fmt = (torch.contiguous_format if images.is_contiguous()
               else suggest_memory_format(images))
        if not self.accepts(images):
            return torch.empty(images.shape, dtype=images.dtype, device=images.device, memory_format=fmt)
        # A buffer made in inference mode cannot be written outside it: one pool for each.
        key = (tuple(images.shape), images.dtype, fmt, torch.is_inference_mode_enabled())
        with self._lock:
            buffers = self._buffers.pop(key, [])
            self._buffers[key] = buffers  # most recently used last
            while len(self._buffers) > self.keys:
                self._buffers.popitem(last=False)
            for buffer in list(buffers):
                storage = buffer.untyped_storage()
                if storage.is_shared():
                    buffers.remove(buffer)  # another process may still read it
                elif _holders(storage) == _FREE:
                    return buffer.detach()
            fresh = torch.empty(images.shape, dtype=images.dtype, memory_format=fmt)
            if len(buffers) < self.per_key:
                buffers.append(fresh)
            return fresh.detach()

    def clear(self) -> None:
        """Drop every buffer (their memory is freed once the caller's results are gone too)."""
        with self._lock:
            self._buffers.clear()
