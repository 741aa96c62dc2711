"""Inputs and checks shared by the mixing tests (the op, the mixers, the collate)."""

import torch

from pyrobust import reference
from tests.conftest import TOLERANCE


DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]


def random_images(n, c, h, w, dtype, channels_last=False, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    x = (x * 255).round().to(dtype) if dtype == torch.uint8 else x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device)


def random_params(n, h, w, mode, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 6, generator=g, dtype=torch.float64)
    p = torch.zeros(n, 6, dtype=torch.float64)
    p[:, 0], p[:, 1] = u[:, 0] * w, u[:, 1] * h
    if mode == "gaussian":
        p[:, 2], p[:, 3] = 0.1 * w + u[:, 2] * w, 0.1 * h + u[:, 3] * h
    elif mode == "trapezoid":
        p[:, 2], p[:, 3] = u[:, 2] * w / 2, u[:, 3] * h / 2
        hard = u[:, 4] < 0.3  # some hard boxes, some soft edges
        p[:, 4] = torch.where(hard, 0.0, u[:, 4] * w / 3)
        p[:, 5] = torch.where(hard, 0.0, u[:, 5] * h / 3)
    else:
        p[:, 0] = u[:, 0]
    return p.float()


def check_close(actual, expected, dtype):
    diff = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = 255.0 if dtype == torch.uint8 else 1.0
    assert diff <= TOLERANCE[dtype] * (1 if dtype == torch.uint8 else scale), f"max error {diff} for {dtype}"


def check_uint8_rounding(out, x, partner, params, mode, invert, fill):
    # Stricter than the one-level tolerance: every byte is the blend rounded to nearest, up to
    # the float32 mask's own rounding (|error| <= 255 * ~2e-7) at a .5 tie.
    # The reference blend of the same bytes in float64, unrounded (the fill saturated first).
    fill = None if fill is None else min(max(fill, 0.0), 255.0)
    exact = reference.mix(x.double(), partner, params, mode, invert, fill)
    err = (out.double() - exact).abs().max().item()
    assert err <= 0.5 + 1e-4, f"max |out - blend| = {err}"


LARGE_UINT8 = (8, 3, 601, 587)  # 8.5 MB: the streaming-store path; rows start off the 32-byte grid


def large_uint8_case(channels_last=False):
    n, c, h, w = LARGE_UINT8
    x = random_images(n, c, h, w, torch.uint8, channels_last, seed=7)
    return x, torch.tensor([1, 0, 3, 2, 5, 4, 6, 6]), random_params(n, h, w, "gaussian", seed=8)
