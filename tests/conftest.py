"""Shared test helpers: the CUDA marker and one table of per-dtype tolerances."""

import os
import socket

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


def _cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import pyrobust

        return pyrobust.has_cuda_kernels()
    except ImportError:
        return False


needs_cuda = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA device and pyrobust's CUDA kernels")

# Absolute tolerances against a float64 reference for values in [0, 1] (uint8: within one step).
# Masks are computed in float32 whatever the image dtype, which bounds float64 accuracy too: the
# two float32 profiles and their product carry up to about 3 float32 roundings (6e-8 each).
TOLERANCE = {
    torch.float64: 3e-7,
    torch.float32: 2e-6,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
    torch.uint8: 1.0,
}


def devices():
    """Parameter list of devices: CPU always, CUDA where it can run."""
    return ["cpu", pytest.param("cuda", marks=needs_cuda)]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for the rendezvous of spawned torch.distributed ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
