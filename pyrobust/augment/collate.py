"""Mixing inside DataLoader workers: a collate function that batches, then mixes.

Mixing in the workers keeps it off the training loop's critical path. Two hazards of worker
processes are handled here:
- repeated masks: forked workers inherit the same generator state, so a mixer given an explicit
  ``generator`` is re-seeded once per worker (and per epoch) from the seed the DataLoader assigns
  that worker; a mixer without a generator draws from torch's global RNG, which the DataLoader
  already seeds per worker.
- OpenMP after fork: PyTorch runs each worker with one intra-op thread, so the mixing kernel runs
  inline there and never touches the parent's thread pool.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch.utils.data import default_collate, get_worker_info

from pyrobust.augment.mixers import BatchMixer


class MixCollate:
    """``collate_fn`` that applies a batch mixer after ``default_collate`` (or ``collate_fn``).

    The wrapped collate must return ``(images, labels, *rest)``; the result is
    ``(mixed images, targets (N, num_classes) float32, *rest)``. Picklable, so it works with
    the fork, spawn and forkserver start methods.
    """

    def __init__(self, mixer: BatchMixer, collate_fn: Optional[Callable[[list], Any]] = None) -> None:
        if not isinstance(mixer, BatchMixer):
            raise TypeError(f"mixer should be a pyrobust.augment mixer, got {type(mixer).__name__}")
        self.mixer = mixer
        self.collate_fn = collate_fn or default_collate
        self._seeded_for: Optional[int] = None

    def _reseed_in_worker(self) -> None:
        info = get_worker_info()
        generator = self.mixer.generator
        if info is None or generator is None or self._seeded_for == info.seed:
            return
        # info.seed differs per worker and per epoch; mixing it with the user's seed keeps runs
        # reproducible while no two workers share a stream.
        generator.manual_seed((generator.initial_seed() * 0x9E3779B97F4A7C15 + info.seed) % (2**63))
        self._seeded_for = info.seed

    def __call__(self, samples: list):
        batch = self.collate_fn(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("MixCollate needs batches of (images, labels, ...)")
        self._reseed_in_worker()
        images, labels = batch[0], batch[1]
        mixed, targets = self.mixer(images, torch.as_tensor(labels))
        return (mixed, targets, *batch[2:])
