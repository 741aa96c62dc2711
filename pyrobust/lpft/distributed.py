"""torch.distributed helpers for fine-tuning: process-group setup, sharded loaders, reductions.

Everything degrades to single-process behaviour when no process group is initialised, so the same training code runs
under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from pyrobust.errors import resolve_device
from pyrobust.features._dist import barrier, rank_world

__all__ = ["barrier", "rank_world", "is_main_process", "init_from_env", "all_reduce_sum", "distributed_train_loader",
           "sharded_eval_loader"]


def is_main_process() -> bool:
    return rank_world()[0] == 0


def init_from_env(device: str | torch.device | None = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_*``)
    with nccl for CUDA and gloo for CPU; does nothing outside torchrun. Returns ``(rank, world_size)``."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return rank_world()
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank_world()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks (in place; a no-op for one process)."""
    if rank_world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _rebuild(loader: DataLoader, sampler, batch_size: int | None = None) -> DataLoader:
    return DataLoader(
        loader.dataset, batch_size=batch_size or loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def distributed_train_loader(loader: DataLoader, seed: int = 0) -> DataLoader:
    """The same loader with a :class:`DistributedSampler` (shuffling iff the original sampler was random).

    ``loader.batch_size`` is the per-rank batch, so the global batch is ``batch_size * world_size``. A loader that
    already uses a DistributedSampler, or a run without a process group, is returned unchanged.
    """
    rank, world = rank_world()
    if world == 1 or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError("distributed fine-tuning needs a DataLoader built with batch_size (not a batch_sampler)")
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank,
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
                                 drop_last=loader.drop_last)
    return _rebuild(loader, sampler)


def sharded_eval_loader(loader: DataLoader) -> DataLoader:
    """Rank ``r`` sees items ``r, r + world, ...`` exactly once (no padding), so summed counts are exact."""
    rank, world = rank_world()
    if world == 1:
        return loader
    if loader.batch_size is None:
        raise ValueError("distributed evaluation needs a DataLoader built with batch_size (not a batch_sampler)")
    return _rebuild(loader, list(range(rank, len(loader.dataset), world)))
