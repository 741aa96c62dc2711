"""Checks of the ops' Python side: the fake (meta) kernels' argument checks, which mirror the C++
ones so that meta and FakeTensor calls refuse what a CPU or CUDA call refuses (shapes, dtypes and
devices: a meta tensor has no values), and the wrappers' size checks, which refuse an output that
no memory of the device could hold before the allocator fails with ``std::bad_alloc``."""

from __future__ import annotations

import os

import torch

_FLOAT_TYPES = (torch.float32, torch.float64)


def check(cond: bool, message: str) -> None:
    torch._check(bool(cond), lambda: message)


def check_value(cond: bool, message: str) -> None:
    torch._check_value(bool(cond), lambda: message)


def check_probe_logits(logits, target, weight) -> None:
    """What ``probe_loss_grad`` and ``probe_line_stats`` require of logits, target and weight."""
    check(logits.dim() == 3, f"logits should be a 3-D (N, m, K) tensor, got {logits.dim()}-D")
    check(logits.dtype in _FLOAT_TYPES, f"logits should be float32 or float64, got {logits.dtype}")
    check_value(logits.shape[2] >= 1, f"logits should have K >= 1 classes (the last dimension), got shape "
                                      f"{tuple(logits.shape)}")
    n = logits.shape[0]
    check(target.dim() == 1 and target.shape[0] == n,
          f"target should be a 1-D tensor of length {n}, got shape {tuple(target.shape)}")
    check(target.dtype == torch.int64, f"target should be int64, got {target.dtype}")
    check(weight.dim() == 1 and weight.shape[0] == n,
          f"weight should be a 1-D tensor of length {n}, got shape {tuple(weight.shape)}")
    check(weight.dtype == logits.dtype, f"weight should have the dtype of logits ({logits.dtype}), got {weight.dtype}")
    check(target.device == logits.device and weight.device == logits.device,
          f"logits, target and weight should be on one device, got {logits.device}, {target.device}, {weight.device}")


def check_probe_line(logits, direction, target, weight, step) -> None:
    check_probe_logits(logits, target, weight)
    check(direction.shape == logits.shape,
          f"direction should have the shape of logits {tuple(logits.shape)}, got {tuple(direction.shape)}")
    check(direction.dtype == logits.dtype and direction.device == logits.device,
          f"direction should match logits in dtype and device, got {direction.dtype} on {direction.device}")
    m = logits.shape[1]
    check(step.dim() == 1 and step.shape[0] == m, f"step should be a 1-D tensor of length m = {m}, got shape "
                                                  f"{tuple(step.shape)}")
    check(step.dtype == torch.float64, f"step should be float64, got {step.dtype}")
    check(step.device == logits.device or step.device.type == "cpu",
          f"step should be on the logits' device ({logits.device}) or on the CPU, got {step.device}")


def check_probe_solve(X, target, weight, lambdas, coef, intercept, center, scale, eigvecs, eigvals, tol,
                      max_iter, history, chunk_rows, history_s, history_y, products) -> None:
    """Shapes, dtypes and scalar ranges of ``probe_solve``'s arguments."""
    check(coef.dim() == 3, f"coef should be a 3-D (m, D, K) tensor, got {coef.dim()}-D")
    m, d, k = coef.shape
    check(coef.dtype in _FLOAT_TYPES, f"coef should be float32 or float64, got {coef.dtype}")
    check_value(k >= 1, f"coef should have K >= 1 classes (the last dimension), got shape {tuple(coef.shape)}")
    check(X.dim() == 2 and X.shape[1] == d, f"X should be a 2-D (N, D) tensor with D = {d}, got shape "
                                            f"{tuple(X.shape)}")
    check(X.is_floating_point(), f"X should be floating point, got {X.dtype}")
    n = X.shape[0]
    check(target.dim() == 1 and target.shape[0] == n, f"target should be a 1-D tensor of length {n}, got shape "
                                                      f"{tuple(target.shape)}")
    check(target.dtype == torch.int64, f"target should be int64, got {target.dtype}")
    check(weight.shape == (n,) and weight.dtype == coef.dtype,
          f"weight should be ({n},) {coef.dtype}, got {tuple(weight.shape)} {weight.dtype}")
    check(lambdas.shape == (m,) and lambdas.dtype == torch.float64,
          f"lambdas should be ({m},) float64, one per C, got {tuple(lambdas.shape)} {lambdas.dtype}")
    for name, t, shape in (("intercept", intercept, (m, k)), ("center", center, (d,)), ("scale", scale, (d,)),
                           ("eigvecs", eigvecs, (d, d) if eigvecs.numel() else (0, 0)), ("eigvals", eigvals, (d,))):
        check(tuple(t.shape) == shape and t.dtype == coef.dtype,
              f"{name} should be {shape} {coef.dtype}, got {tuple(t.shape)} {t.dtype}")
        check(t.device == coef.device, f"{name} should be on coef's device {coef.device}, got {t.device}")
    check((history_s is None) == (history_y is None), "history_s and history_y should be given together")
    if history_s is not None:
        for name, t in (("history_s", history_s), ("history_y", history_y)):
            check(t.dim() == 3 and tuple(t.shape[1:]) == (d + 1, k),
                  f"{name} should be (h, D + 1, K) = (h, {d + 1}, {k}), got {tuple(t.shape)}")
    check_value(tol >= 0, f"tol should be >= 0, got {tol}")
    check_value(max_iter >= 0, f"max_iter should be >= 0, got {max_iter}")
    check_value(history >= 1, f"history should be >= 1, got {history}")
    check_value(chunk_rows >= 0, f"chunk_rows should be >= 0 (0: all rows), got {chunk_rows}")
    check_value(products in ("convert", "split"), f"products should be 'convert' or 'split', got {products!r}")


def check_mix_params(params, n: int, mode: str) -> None:
    check(params.dim() == 2 and params.shape[1] == 6, f"params should be an (N, 6) tensor, got shape "
                                                      f"{tuple(params.shape)}")
    check(params.dtype == torch.float32, f"params should be float32, got {params.dtype}")
    if n >= 0:
        check(params.shape[0] == n, f"params should have one row per image ({n}), got {params.shape[0]}")
    check_value(mode in ("gaussian", "trapezoid", "constant"),
                f"mode should be 'gaussian', 'trapezoid' or 'constant', got '{mode}'")


def check_mix_images(images, partner, params, mode) -> None:
    check(images.dim() == 4, f"images should be a 4-D (N, C, H, W) tensor, got {images.dim()}-D")
    check(images.dtype in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64),
          f"images should be uint8, float16, bfloat16, float32 or float64, got {images.dtype}")
    n = images.shape[0]
    check(partner.dim() == 1 and partner.shape[0] == n, f"partner should be a 1-D tensor of length {n}, got shape "
                                                        f"{tuple(partner.shape)}")
    check(partner.dtype == torch.int64, f"partner should be int64, got {partner.dtype}")
    check_mix_params(params, n, mode)
    for name, t in (("partner", partner), ("params", params)):
        check(t.device == images.device or t.device.type == "cpu",
              f"{name} should be on the images' device ({images.device}) or on the CPU, got {t.device}")


def check_mix_labels(images, labels, num_classes, label_smoothing) -> None:
    check_value(num_classes >= 1, f"num_classes should be >= 1, got {num_classes}")
    check_value(0.0 <= label_smoothing < 1.0, f"label_smoothing should be in [0, 1), got {label_smoothing}")
    n = images.shape[0]
    check_value(labels.dim() == 1 and labels.shape[0] == n,
                f"labels should be 1-D of length N={n}, got shape {tuple(labels.shape)}")
    torch._check_type(not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool,
                      lambda: f"labels should be integers, got {labels.dtype}")
    check(labels.device == images.device or labels.device.type == "cpu",
          f"labels should be on the images' device ({images.device}) or on the CPU, got {labels.device}")


_MEMORY: dict = {}  # device -> bytes, asked once: the wrappers run per batch


def device_memory(device) -> int:
    """Bytes of memory on ``device``: the GPU's total, or the machine's physical memory."""
    total = _MEMORY.get(device)
    if total is None:
        dev = torch.device(device)
        if dev.type == "cuda":
            total = torch.cuda.get_device_properties(dev).total_memory
        else:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError, AttributeError):
                total = 1 << 62
        _MEMORY[device] = total
    return total


def check_fits(nbytes: int, device, what: str) -> None:
    """ValueError naming ``what`` when ``nbytes`` exceeds the memory of ``device`` (skipped while
    torch.compile traces: the sizes are then symbolic)."""
    if torch.compiler.is_compiling():
        return
    total = device_memory(device)
    if nbytes > total:
        raise ValueError(f"{what} would take {nbytes / 2**30:.3g} GiB, more than the {total / 2**30:.3g} GiB of "
                         f"{torch.device(device)}")
