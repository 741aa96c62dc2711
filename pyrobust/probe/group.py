"""Reductions over the ``torch.distributed`` group of a sweep whose rows are spread over ranks.

Each rank holds its own rows of train and val; every statistic summed over rows (weights, class
counts, feature sums and covariance, val metric sums) is all-reduced here, and the label set is
the union of the ranks' labels, so every rank builds the same problem. ``group=None`` is one
process holding every row: each function is then the identity.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["agree", "check_group", "group_name", "sum_", "union_labels"]


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


def agree(check, group):
    """``check()``, whose errors every rank of ``group`` sees: each rank runs its own input checks
    (no collective inside), then the ranks exchange their outcomes in one collective. A rank whose
    check failed raises its own error; the others raise a ValueError naming it and its message.
    Without this, a rank failing alone would leave the others waiting in the solver's first
    collective until the backend's timeout. Returns ``check()``'s value (None: one process)."""
    try:
        value, failure = check(), None
    except (ValueError, TypeError) as exc:
        value, failure = None, exc
    if group is not None:
        import torch.distributed as dist

        reports = [None] * dist.get_world_size(group)
        mine = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(reports, mine, group=group)
        failed = [f"rank {r}: {m}" for r, m in enumerate(reports) if m is not None]
        if failed and failure is None:
            raise ValueError("another rank's input failed its checks, so no rank sweeps; "
                             + "; ".join(failed))
    if failure is not None:
        raise failure
    return value


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
