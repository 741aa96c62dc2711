"""Typed wrappers over the fused mixing ops, with their fake kernels and autograd formula.

``mix`` computes, in one pass over memory,

    out[i] = G_i * images[i] + (1 - G_i) * other_i,   other_i = images[partner[i]] or ``fill``

where ``G_i = base + sign * gy_i(y) * gx_i(x)`` is a separable mask whose two 1-D profiles come
from six float parameters per sample (layout in ``csrc/ops/mix_profiles.h``; ``MASK_MODES``
names the profile families). ``invert=True`` uses ``1 - gy * gx``. Beside it, one mixing call
is ``mix_draw`` (the random decisions, with a torch generator) and ``mix_targets`` (each sample's
``lam`` and soft targets, on the images' device), and ``mix_batch`` runs those three in one op
call; ``mix_mask`` and ``mix_lambda`` materialise the masks and their means for tests and
galleries.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch._prims_common  # the fake kernel's memory format, for symbolic shapes

from pyrobust.checks import check_int
from pyrobust.ops import _checks
from pyrobust.ops import _library  # noqa: F401  (loads the compiled core)

MASK_MODES = ("gaussian", "trapezoid", "constant")
MIX_PARAMS = 6

_ops = torch.ops.pyrobust


def mix(
    images: torch.Tensor,
    partner: torch.Tensor,
    params: torch.Tensor,
    mode: str,
    invert: bool = False,
    fill: Optional[float] = None,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mix each image with its partner (or a constant) through a separable mask.

    Args:
        images: ``(N, C, H, W)`` uint8, float16, bfloat16, float32 or float64, contiguous or
            channels_last, CPU or CUDA.
        partner: ``(N,)`` int64, ``partner[i]`` in ``[0, N)``; ignored when ``fill`` is given.
        params: ``(N, 6)`` float32 mask parameters.
            Both on the images' device or on the CPU. For CUDA images, CPU ones are checked on
            the host and copied with the launch (no sync: how the mixers pass them); a partner
            on the device costs one sync for its range check.
        mode: ``"gaussian"``, ``"trapezoid"`` or ``"constant"``.
        invert: mask ``1 - gy * gx`` instead of ``gy * gx``.
        fill: mix with this constant instead of a partner image (Cutout).
        out: optional preallocated output, same shape, dtype and memory format as ``images``
            and not aliasing them; reusing one avoids a fresh allocation per batch. An eager
            (data loader) option: ``mix.out`` returns its mutated argument, which
            torch.compile cannot functionalize for a custom op, so compiled code calls the
            functional form (whose buffers the compiler plans itself).

    Returns:
        ``(N, C, H, W)`` in the images' dtype and memory format (uint8 rounded to nearest).
        Differentiable with respect to ``images`` (float dtypes) when ``out`` is not given.
    """
    if out is not None:
        return _ops.mix.out(images, partner, params, mode, invert, fill, out=out)
    return _ops.mix(images, partner, params, mode, invert, fill)


def mix_gather(
    samples: Sequence[torch.Tensor],
    partner: torch.Tensor,
    params: torch.Tensor,
    mode: str,
    invert: bool = False,
    fill: Optional[float] = None,
    *,
    out: torch.Tensor,
) -> torch.Tensor:
    """``mix(torch.stack(samples), partner, params, mode, invert, fill, out=out)`` without the
    stack: each sample is read where it lies (a collate's list of samples in, the mixed batch
    out, one pass over memory). Bit for bit the result of the stacked call.

    Args:
        samples: N ``(C, H, W)`` CPU tensors of ``out``'s dtype, each contiguous (or ``(H, W, C)``
            in memory for a channels_last ``out``; others are copied so first).
        partner, params, mode, invert, fill: as for ``mix``.
        out: ``(N, C, H, W)``, contiguous or channels_last, aliasing no sample.

    Returns:
        ``out``. An eager (data loader) op: not differentiable, not traced.
    """
    return _ops.mix_gather.out(list(samples), partner, params, mode, invert, fill, out=out)


def mix_pairs_(images: torch.Tensor, params: torch.Tensor, modes: torch.Tensor,
               invert: torch.Tensor) -> torch.Tensor:
    """Mix each pair ``(i, N - 1 - i)`` of ``images`` with each other, in place.

    From the originals of both, ``images[i] = G_i images[i] + (1 - G_i) images[j]`` and
    ``images[j] = G_j images[j] + (1 - G_j) images[i]`` for ``i < N // 2``, ``j = N - 1 - i``:
    the flipped-batch mix that timm does in place, reading and writing each pair once (two passes
    over memory, where ``mix(out=)`` and a copy back take three).

    Args:
        images: ``(N, C, H, W)`` as for ``mix``, contiguous or channels_last (mixed in place).
        params: ``(N, 6)`` float32 mask parameters, on the images' device or the CPU.
        modes: ``(N,)`` int64 on the CPU: sample k's profile, ``MASK_MODES.index(name)``
            (0 gaussian, 1 trapezoid, 2 constant), or -1 to leave the sample as it is. The
            middle sample of an odd batch is always left as it is.
        invert: ``(N,)`` bool on the CPU: sample k's mask is ``1 - gy * gx``.

    Returns:
        ``images``, mixed (uint8 rounded to nearest, as ``mix``). Not differentiable.
    """
    _ops.mix_pairs_(images, params, modes, invert)
    return images


def mix_mask(params: torch.Tensor, mode: str, invert: bool, height: int, width: int) -> torch.Tensor:
    """The masks ``G`` that ``mix`` applies, materialised: ``(N, H, W)`` float32."""
    height, width = check_int(height, "height", min=0), check_int(width, "width", min=0)
    _checks.check_fits(params.shape[0] * height * width * 4, params.device, f"mix_mask's ({params.shape[0]}, "
                       f"{height}, {width}) float32 masks")
    return _ops.mix_mask(params, mode, invert, height, width)


def mix_lambda(params: torch.Tensor, mode: str, invert: bool, height: int, width: int) -> torch.Tensor:
    """``mean(G_i)`` per sample, exact from the two 1-D profiles: ``(N,)`` float32."""
    return _ops.mix_lambda(params, mode, invert, height, width)


def mix_targets(
    images: torch.Tensor,
    labels: torch.Tensor,
    partner: torch.Tensor,
    params: torch.Tensor,
    mode: str,
    invert: bool,
    num_classes: int,
    label_smoothing: float = 0.0,
    mix_labels: bool = True,
) -> tuple:
    """The soft targets of a mix and the weight of each sample's own label, in one call.

    ``lam[i] = mean(G_i)``, exact from the two profiles (1 for an unmixed sample: one paired
    with itself, or every sample when ``mix_labels`` is False), and

        targets[i] = s / K + (1 - s) * (lam[i] onehot(labels[i]) + (1 - lam[i]) onehot(labels[partner[i]]))

    with ``s = label_smoothing``, the two label terms rounded to float32 and added in that order:
    identical run to run; CPU and CUDA agree bit for bit but for the last bit of a ``lam`` (their
    ``exp`` and sum orders differ).

    Args:
        images: the ``(N, C, H, W)`` batch being mixed; only its size and device are used: the
            results are made on its device.
        labels: ``(N,)`` integer class ids in ``[0, num_classes)``, on the images' device or the
            CPU. Host labels are checked on the host; labels on a GPU cost one sync for the check.
        partner, params, mode, invert: as given to ``mix`` (CPU ones travel in one copy).
        num_classes: K.
        label_smoothing: ``s`` in ``[0, 1)``.
        mix_labels: False for Cutout: every target is the sample's own label.

    Returns:
        ``(targets, lam)``: ``(N, K)`` and ``(N,)`` float32 on the images' device.
    """
    num_classes = check_int(num_classes, "num_classes", min=1)
    _checks.check_fits(images.shape[0] * num_classes * 4, images.device,
                       f"mix_targets' ({images.shape[0]}, {num_classes}) float32 targets")
    return _ops.mix_targets(images, labels, partner, params, mode, invert, num_classes,
                            label_smoothing, mix_labels)


def mix_draw(
    n: int,
    height: int,
    width: int,
    family: str,
    args: Sequence[float],
    p: float = 1.0,
    per_sample: bool = True,
    pairing: str = "permute",
    mix_labels: bool = True,
    generator: Optional[torch.Generator] = None,
) -> tuple:
    """Every random decision of one mixing call, drawn with ``generator`` in one call.

    Args:
        n, height, width: the batch's size.
        family: ``"circle"``, ``"square"``, ``"cutmix"``, ``"mixup"`` or ``"cutout"``; ``args``
            respectively ``[lo, hi, ellipse]``, ``[lo, hi, smooth]``, ``[alpha]``, ``[alpha]``,
            ``[size, fraction]`` (the formulas and the order of the random stream are in
            ``csrc/ops/mix_draw.cpp``).
        p: probability that a sample is mixed; an unmixed one pairs with itself (with
            ``mix_labels`` False, Cutout, its box is also emptied).
        per_sample: own parameters per sample, or one draw shared by the batch.
        pairing: ``"permute"`` (random), ``"flip"`` (i with N - 1 - i) or ``"roll"`` (i with i - 1).
        generator: a CPU ``torch.Generator``; None uses torch's default one.

    Returns:
        ``(partner, params, active)``: ``(N,)`` int64, ``(N, 6)`` float32, ``(N,)`` bool, CPU.
    """
    check_int(n, "n", min=0)
    check_int(height, "height", min=0, max=_MAX_SIDE)
    check_int(width, "width", min=0, max=_MAX_SIDE)
    args = _check_draw(args, generator)
    _checks.check_fits(n * (8 + 4 * MIX_PARAMS + 1), "cpu", f"mix_draw's outputs for n={n} samples")
    return _ops.mix_draw(n, height, width, family, args, float(p), per_sample, pairing, mix_labels, generator)


# Mask parameters are float32 pixel coordinates: exact integers up to 2^24.
_MAX_SIDE = 1 << 24


def _check_draw(args, generator) -> list:
    """``args`` as finite floats, and the generator's type: what the op does not check itself (it
    checks the family, each argument's range, ``p`` and ``pairing``). Kept to a few microseconds:
    the mixers call it per batch."""
    try:
        values = [float(a) for a in args]
    except (TypeError, ValueError):
        raise TypeError(f"args should be a sequence of numbers, got {args!r}") from None
    if not all(map(math.isfinite, values)):
        raise ValueError(f"args should be finite numbers, got {values}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator or None, got {type(generator).__name__}")
    return values


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    family: str,
    args: Sequence[float],
    p: float,
    per_sample: bool,
    pairing: str,
    generator: Optional[torch.Generator],
    mode: str,
    invert: bool,
    fill: Optional[float],
    num_classes: int,
    label_smoothing: float = 0.0,
    mix_labels: bool = True,
    *,
    out: Optional[torch.Tensor] = None,
) -> tuple:
    """One whole mixing call in one op: ``mix_draw``, ``mix_targets`` and ``mix`` (or ``mix.out``
    into ``out``) run from C++, with the same results, bit for bit, as the three called in turn
    on the same generator state (each op called from Python costs ~6 us before any work; see
    ``csrc/ops/mix_batch.cpp``).

    Returns:
        ``(images, targets, lam, partner, params)``: as ``mix``, ``mix_targets`` and ``mix_draw``
        return them (no ``active``: a sample is mixed exactly when its partner is another one).
    """
    args = _check_draw(args, generator)
    num_classes = check_int(num_classes, "num_classes", min=1)
    if isinstance(images, torch.Tensor) and images.dim() >= 1:
        n = images.shape[0]
        _checks.check_fits(n * num_classes * 4, images.device, f"mix_batch's ({n}, {num_classes}) float32 targets")
    inputs = (images, labels, family, args, float(p), per_sample, pairing,
              generator, mode, invert, fill, num_classes, label_smoothing, mix_labels)
    if out is None:
        return _ops.mix_batch.default(*inputs)
    return _ops.mix_batch.out(*inputs, out=out)


def suggest_memory_format(images: torch.Tensor) -> torch.memory_format:
    """The memory format the mixing ops give a result for ``images``: ATen's
    ``Tensor.suggest_memory_format()``, ``torch.channels_last`` where a 4-D strided tensor's
    strides order its dims N, H, W, C (dense or not), else ``torch.contiguous_format``.

    For concrete strides only. ``torch._prims_common.suggest_memory_format`` gives the same answer
    but loads the symbolic-shape machinery on its first call, about 0.4 s in every process, which
    each DataLoader worker would pay once per epoch.
    """
    if images.layout != torch.strided or images.dim() != 4:
        return torch.contiguous_format
    sizes, strides = images.shape, images.stride()
    if strides[1] == 0:  # a broadcast channel: ambiguous, NCHW as ATen decides
        return torch.contiguous_format
    low = 0
    for d in (1, 3, 2, 0):  # from the fastest-varying dim of NHWC outwards
        if sizes[d] == 0 or strides[d] < low:
            return torch.contiguous_format
        if d == 0 and low == strides[1]:  # N111 and sliced N11W: NCHW, as ATen decides
            return torch.contiguous_format
        low = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return torch.channels_last


@torch.library.register_fake("pyrobust::mix_draw")
def _mix_draw_fake(n, height, width, family, args, p, per_sample, pairing, mix_labels, generator=None):
    _checks.check_value(n >= 0 and height >= 0 and width >= 0,
                        f"n, height and width should be >= 0, got {n}, {height}, {width}")
    _checks.check_value(0.0 <= p <= 1.0, f"p should be a probability in [0, 1], got {p}")
    return (torch.empty((n,), dtype=torch.long), torch.empty((n, MIX_PARAMS), dtype=torch.float32),
            torch.empty((n,), dtype=torch.bool))


@torch.library.register_fake("pyrobust::mix")
def _mix_fake(images, partner, params, mode, invert, fill):
    _checks.check_mix_images(images, partner, params, mode)
    return torch.empty_like(images, memory_format=torch._prims_common.suggest_memory_format(images))


@torch.library.register_fake("pyrobust::mix_pairs_")
def _mix_pairs_fake(images, params, modes, invert):
    n = images.shape[0]
    flip = torch.empty((n,), dtype=torch.long)  # the partners are implied: i with N - 1 - i
    _checks.check_mix_images(images, flip, params, "constant")
    _checks.check(modes.dim() == 1 and modes.shape[0] == n and modes.dtype == torch.int64,
                  f"modes should be a 1-D int64 tensor of length {n}, got {modes.dtype} of shape {tuple(modes.shape)}")
    _checks.check(invert.dim() == 1 and invert.shape[0] == n and invert.dtype == torch.bool,
                  f"invert should be a 1-D bool tensor of length {n}, got {invert.dtype} of shape {tuple(invert.shape)}")


@torch.library.register_fake("pyrobust::mix_mask")
def _mix_mask_fake(params, mode, invert, height, width):
    _checks.check_mix_params(params, -1, mode)
    _checks.check(height >= 0 and width >= 0, f"height and width should be >= 0, got {height} and {width}")
    return params.new_empty((params.shape[0], height, width))


@torch.library.register_fake("pyrobust::mix_lambda")
def _mix_lambda_fake(params, mode, invert, height, width):
    _checks.check_mix_params(params, -1, mode)
    _checks.check(height > 0 and width > 0, f"height and width should be > 0, got {height} and {width}")
    return params.new_empty((params.shape[0],))


@torch.library.register_fake("pyrobust::mix_targets")
def _mix_targets_fake(images, labels, partner, params, mode, invert, num_classes, label_smoothing, mix_labels):
    _checks.check_mix_images(images, partner, params, mode)
    _checks.check_mix_labels(images, labels, num_classes, label_smoothing)
    n = images.shape[0]
    return (images.new_empty((n, num_classes), dtype=torch.float32),
            images.new_empty((n,), dtype=torch.float32))


# Autograd of pyrobust::mix is registered in C++ (csrc/ops/mix_autograd.cpp): from Python it
# put ~7 us of Python in front of every call, even with nothing requiring a gradient.
