"""Mixing inside DataLoader workers: a collate function that batches, then mixes.

Mixing in the workers keeps it off the training loop's critical path. Two hazards of worker
processes are handled here:
- repeated masks: forked workers inherit the same generator state, so a mixer given an explicit
  ``generator`` is re-seeded once per worker (and per epoch) from the seed the DataLoader assigns
  that worker; a mixer without a generator draws from torch's global RNG, which the DataLoader
  already seeds per worker.
- OpenMP after fork: PyTorch runs each worker with one intra-op thread, so the mixing kernel runs
  inline there and never touches the parent's thread pool.

Shared memory: a worker hands each batch to the main process in shared memory, whose pages are
the costly part of a worker's batch here (first-touching 38 MB of it took ~50 ms, 4 KiB a fault:
no huge pages for tmpfs; the blend itself ~8 ms). ``default_collate`` already stacks into shared
memory, and the mixed batch would then be copied into a second shared block. With the default
collate, MixCollate instead mixes the samples where they lie straight into the one shared block
(``mix_ops.mix_gather``): one pass, as the default collate's stack is one.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch.utils.data import default_collate, get_worker_info

from pyrobust.augment.mixers import BatchMixer
from pyrobust.ops import mix as mix_ops


class MixCollate:
    """``collate_fn`` that applies a batch mixer after ``default_collate`` (or ``collate_fn``).

    The wrapped collate must return ``(images, labels, *rest)``; the result is
    ``(mixed images, targets (N, num_classes) float32, *rest)``. Picklable, so it works with
    the fork, spawn and forkserver start methods. With the default collate, a worker mixes the
    samples where they lie into the shared batch (see the module's docstring).
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
        in_worker = get_worker_info() is not None
        if in_worker:
            gathered = self._mix_gathered(samples)
            if gathered is not None:
                return gathered
        batch = self.collate_fn(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("MixCollate needs batches of (images, labels, ...)")
        self._reseed_in_worker()
        images, labels = batch[0], batch[1]
        out = _shared_output(images) if in_worker else None
        if out is None:
            mixed, targets = self.mixer(images, torch.as_tensor(labels))
        else:
            mixed, targets = self.mixer(images, torch.as_tensor(labels), out=out)
        return (mixed, targets, *batch[2:])

    def _mix_gathered(self, samples: list) -> Optional[tuple]:
        """What ``__call__`` returns, with the images mixed from where each sample lies straight
        into a shared-memory batch (no stacking pass), the same draws and values as the mixer's
        own call on the stacked batch; None (collate as usual) unless the default collate is in
        use and every sample is a sequence whose first item is a CPU (C, H, W) tensor of one
        shape and dtype."""
        if self.collate_fn is not default_collate or not isinstance(samples, list) or not samples:
            return None
        if not all(isinstance(s, (tuple, list)) and len(s) >= 2 for s in samples):
            return None
        first = samples[0][0]
        if not isinstance(first, torch.Tensor) or first.device.type != "cpu" or first.dim() != 3 \
                or first.layout != torch.strided or first.is_nested or first.requires_grad:
            return None
        if not all(isinstance(s[0], torch.Tensor) and s[0].shape == first.shape
                   and s[0].dtype == first.dtype and s[0].device == first.device
                   and s[0].layout == torch.strided for s in samples):
            return None
        labels, *rest = default_collate([tuple(s[1:]) for s in samples])
        labels = torch.as_tensor(labels)
        out = _shared_output(first.expand(len(samples), *first.shape))
        self._reseed_in_worker()
        mixer = self.mixer
        mixer._check_inputs(out, labels)
        n, _, height, width = out.shape
        partner, params, _ = mixer.sample(n, height, width)
        targets, _ = mix_ops.mix_targets(out, labels, partner, params, mixer.profile, mixer.invert,
                                         mixer.num_classes, mixer.label_smoothing, mixer.mixes_labels)
        mix_ops.mix_gather([s[0] for s in samples], partner, params, mixer.profile, mixer.invert,
                           mixer._fill(), out=out)
        return (out, targets, *rest)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_buffer", None)  # a scratch space of earlier versions: never pickled
        return state


def _shared_output(images: Any) -> Optional[torch.Tensor]:
    """An empty tensor in shared memory laid out like the mixer's output for ``images``
    (contiguous, or channels_last for a channels-last batch); None where there is none to make."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.device.type != "cpu":
        return None  # the mixer reports what is wrong with it
    # The op's own choice (ATen's suggest_memory_format): channels-last strides, dense or not,
    # give a channels-last output.
    fmt = mix_ops.suggest_memory_format(images)
    stride = torch.empty(images.shape, dtype=images.dtype, device="meta", memory_format=fmt).stride()
    storage = images._typed_storage()._new_shared(images.numel(), device=images.device)
    return images.new_empty(0).set_(storage, 0, images.shape, stride)
