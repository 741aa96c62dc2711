"""Reductions over the ``torch.distributed`` group of a sweep whose rows are spread over ranks.

Each rank holds its own rows of train and val; every statistic summed over rows (weights, class
counts, feature sums and covariance, val metric sums) is all-reduced here, and the label set is
the union of the ranks' labels, so every rank builds the same problem. ``group=None`` is one
process holding every row: each function is then the identity.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_group", "group_name", "sum_", "union_labels"]


def check_group(process_group):
    """``process_group`` as given (None: one process), checked to be a usable group."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("process_group is given but torch.distributed is not initialised "
                         "(call torch.distributed.init_process_group first)")
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(f"process_group should be a torch.distributed ProcessGroup, got "
                        f"{type(process_group).__name__}")
    return process_group


def group_name(group) -> str | None:
    """The registered name the compiled solver resolves the group by (None: no group)."""
    return None if group is None else group.group_name


def sum_(t: torch.Tensor, group) -> torch.Tensor:
    """``t`` summed over the ranks of ``group``, in place (``t`` unchanged without a group). A host
    tensor goes through the current CUDA device when the group is nccl's (which has no host path)."""
    if group is None:
        return t
    import torch.distributed as dist

    if t.device.type == "cpu" and dist.get_backend(group) == "nccl":
        on_gpu = t.cuda()
        dist.all_reduce(on_gpu, group=group)
        return t.copy_(on_gpu)
    dist.all_reduce(t, group=group)
    return t


def union_labels(classes: np.ndarray, group) -> np.ndarray:
    """The sorted union of every rank's sorted unique labels."""
    if group is None:
        return classes
    import torch.distributed as dist

    parts = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, classes, group=group)
    return np.unique(np.concatenate(parts))
