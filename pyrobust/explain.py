"""Where a classifier looks: Grad-CAM and the hard-/soft-edge pasted patches of the SmoothMix study.

- :func:`grad_cam` — Grad-CAM (Selvaraju et al., ICCV 2017). For the activation ``A`` (``K`` maps of
  ``h × w``) of a target layer and the score ``y_c`` (the logit, before softmax) of class ``c``:

      alpha_k = (1 / (h w)) Σ_ij ∂y_c / ∂A_k[i, j]          (global-average-pooled gradients)
      CAM     = ReLU(Σ_k alpha_k A_k)                         (h × w)

  then upsampled bilinearly (``align_corners=False``) to the input size and, by default, divided by
  its per-image maximum so that it lies in ``[0, 1]`` (an all-zero map stays zero). For a network
  that ends in global average pooling and a linear layer with the target layer right before the
  pool, ``alpha_k = W[c, k] / (h w)`` and Grad-CAM equals CAM (Zhou et al., CVPR 2016) up to that
  constant — the closed form the tests check.
- :func:`paste_patch` — the "strong edge" test of SmoothMix (Lee et al., CVPRW 2020, Fig. 1): a square
  patch of a donor image pasted into each image with a hard edge, or the same patch blended through a
  soft-edged window whose border ramps linearly (like SmoothMix's square mask). (Its former name,
  ``patch_probe``, still works; "probe" in pyrobust means the linear probe.)
- :func:`cam_mass_in_box` — the fraction of a CAM's mass inside the pasted box, the number the study
  reports per mixer: a model that has learned to latch onto hard edges puts more of its evidence there.

Nothing here needs the compiled core.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["grad_cam", "paste_patch", "patch_probe", "random_boxes", "box_masks", "soft_box_weights",
           "cam_mass_in_box"]


def _resolve_layer(model: nn.Module, target_layer: Union[nn.Module, str]) -> nn.Module:
    if isinstance(target_layer, nn.Module):
        if not any(m is target_layer for m in model.modules()):
            raise ValueError(f"target_layer {type(target_layer).__name__} is not a sub-module of the model")
        return target_layer
    if isinstance(target_layer, str):
        try:
            return model.get_submodule(target_layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][-8:]
            raise ValueError(
                f"target_layer {target_layer!r} is not a sub-module of {type(model).__name__}; "
                f"last sub-modules: {', '.join(names)}"
            ) from None
    raise TypeError(f"target_layer should be an nn.Module or a dotted name, got {type(target_layer).__name__}")


def _resolve_classes(classes, n: int, logits: torch.Tensor) -> torch.Tensor:
    if classes is None:
        return logits.argmax(1)
    c = torch.as_tensor(classes, device=logits.device)
    if c.dtype.is_floating_point or c.dtype == torch.bool:
        raise TypeError(f"classes should be integer class ids, got dtype {c.dtype}")
    c = c.long().expand(n) if c.dim() == 0 else c.long()
    if c.shape != (n,):
        raise ValueError(f"classes should be an int or have shape ({n},), got shape {tuple(c.shape)}")
    k = logits.shape[1]
    if n and (int(c.min()) < 0 or int(c.max()) >= k):
        raise ValueError(f"classes should be in [0, {k}), got values in [{int(c.min())}, {int(c.max())}]")
    return c


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: Union[nn.Module, str],
    classes: Union[None, int, Sequence[int], torch.Tensor] = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps of ``classes`` for ``images`` at ``target_layer`` (see the module docstring).

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, K)`` logits. It is run in eval mode (BatchNorm
            with running statistics, so each image's map depends on that image only) and restored
            to its previous mode afterwards; its parameters receive no gradients.
        images: ``(N, C, H, W)`` floating point, on the model's device.
        target_layer: a sub-module of ``model`` whose output is ``(N, K', h, w)``, or its dotted name
            (e.g. ``"backbone.layer3"``).
        classes: class whose score is explained: ``None`` (default, the predicted class), one int
            for every image, or ``(N,)`` integer ids.
        normalize: divide each map by its maximum so it lies in ``[0, 1]`` (default); ``False``
            returns the raw ``ReLU(Σ_k alpha_k A_k)``, upsampled.

    Returns:
        float32 ``(N, H, W)`` maps, non-negative, on the images' device.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images should be a floating (N, C, H, W) tensor, got {shape}")
    layer = _resolve_layer(model, target_layer)
    captured: list = []

    def hook(module, inputs, output):
        captured.append(output)

    was_training = model.training
    handle = layer.register_forward_hook(hook)
    model.eval()
    try:
        with torch.enable_grad():
            # Gradients are taken w.r.t. the activation only, so inputs and weights need none; a
            # leaf copy of the images makes the activation part of a graph even when every
            # parameter is frozen.
            x = images.detach().requires_grad_(True)
            logits = model(x)
            if len(captured) != 1:
                raise ValueError(f"target_layer ran {len(captured)} times in one forward pass; expected once")
            act = captured[0]
            if act.dim() != 4:
                raise ValueError(f"target_layer outputs shape {tuple(act.shape)}; Grad-CAM needs (N, K, h, w)")
            cls = _resolve_classes(classes, images.shape[0], logits)
            # Images are independent in eval mode, so the gradient of the summed scores w.r.t. A[i]
            # is the gradient of image i's own score.
            score = logits.gather(1, cls[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * act.detach()).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
        cam = cam / peak[:, None, None]
    return cam


def random_boxes(n: int, height: int, width: int, size: Union[float, int] = 0.4,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(n, 4)`` int64 square boxes ``(top, left, bottom, right)`` (bottom/right exclusive) inside the image.

    ``size`` is the side, a fraction of ``min(height, width)`` (float in (0, 1]) or pixels (int); the
    position is uniform over the places where the whole box fits, drawn from ``generator``.
    """
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
        raise ValueError(f"size should be a positive fraction or a pixel count, got {size!r}")
    side = int(round(size * min(height, width))) if isinstance(size, float) else int(size)
    if isinstance(size, float) and size > 1.0 or not 1 <= side <= min(height, width):
        raise ValueError(f"a box of side {size!r} does not fit a {height}x{width} image")
    top = torch.randint(0, height - side + 1, (n,), generator=generator)
    left = torch.randint(0, width - side + 1, (n,), generator=generator)
    return torch.stack([top, left, top + side, left + side], 1)


def _check_boxes(boxes, n: int, height: int, width: int) -> torch.Tensor:
    b = torch.as_tensor(boxes)
    if b.dtype.is_floating_point or b.dtype == torch.bool:
        raise TypeError(f"box should hold integer pixel coordinates, got dtype {b.dtype}")
    b = b.long()
    if b.shape == (4,):
        b = b.expand(n, 4)
    if b.shape != (n, 4):
        raise ValueError(f"box should be (top, left, bottom, right) or have shape ({n}, 4), got {tuple(b.shape)}")
    top, left, bottom, right = b.unbind(1)
    ok = (top >= 0) & (left >= 0) & (bottom <= height) & (right <= width) & (bottom > top) & (right > left)
    if n and not bool(ok.all()):
        bad = b[~ok][0].tolist()
        raise ValueError(f"box {bad} is empty or leaves the {height}x{width} image")
    return b


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)`` bool masks, True inside each ``(top, left, bottom, right)`` box."""
    b = _check_boxes(boxes, torch.as_tensor(boxes).reshape(-1, 4).shape[0], height, width)
    ys = torch.arange(height)[None, :, None]
    xs = torch.arange(width)[None, None, :]
    return ((ys >= b[:, 0, None, None]) & (ys < b[:, 2, None, None])
            & (xs >= b[:, 1, None, None]) & (xs < b[:, 3, None, None]))


def _trapezoid(coord: torch.Tensor, low: torch.Tensor, high: torch.Tensor, edge: float) -> torch.Tensor:
    # distance outside [low, high] of each pixel centre, ramped so that the 0.5 level sits on the
    # box border: the soft window keeps the hard box's area to first order.
    centre = coord[None, :] + 0.5
    outside = torch.maximum(low[:, None] - centre, centre - high[:, None])
    return (0.5 - outside / edge).clamp(0.0, 1.0)


def soft_box_weights(boxes: torch.Tensor, height: int, width: int, edge: Union[float, int] = 0.2) -> torch.Tensor:
    """``(N, H, W)`` float32 soft windows: 1 deep inside each box, 0 far outside, linear in between.

    Each window is the product of two 1-D trapezoids (SmoothMix's square mask). Along x the weight at
    pixel centre ``u`` is ``clamp(0.5 - d(u) / e, 0, 1)`` with ``d`` the signed distance from the box
    border (negative inside) and ``e`` the edge width — ``edge`` times ``min(H, W)`` (float) or pixels
    (int). The weight is 0.5 on the border, 1 from ``e/2`` inside it, 0 from ``e/2`` outside it.
    """
    if isinstance(edge, bool) or not isinstance(edge, (int, float)) or edge <= 0:
        raise ValueError(f"edge should be a positive fraction or a pixel count, got {edge!r}")
    e = float(edge) * min(height, width) if isinstance(edge, float) else float(edge)
    b = _check_boxes(boxes, torch.as_tensor(boxes).reshape(-1, 4).shape[0], height, width).float()
    gy = _trapezoid(torch.arange(height, dtype=torch.float32), b[:, 0], b[:, 2], e)
    gx = _trapezoid(torch.arange(width, dtype=torch.float32), b[:, 1], b[:, 3], e)
    return gy[:, :, None] * gx[:, None, :]


def paste_patch(
    images: torch.Tensor,
    donors: torch.Tensor,
    box: Union[Sequence[int], torch.Tensor],
    *,
    soft: bool = False,
    edge: Union[float, int] = 0.2,
) -> tuple:
    """Paste the ``box`` region of ``donors`` into ``images``, with a hard or a soft edge.

    Args:
        images: ``(N, C, H, W)`` floating point host images.
        donors: the same shape; donor ``i`` gives image ``i`` its patch (e.g. ``images.roll(1, 0)``).
        box: ``(top, left, bottom, right)`` pixel corners (bottom/right exclusive) for every image,
            or ``(N, 4)`` int boxes, one per image (see :func:`random_boxes`).
        soft: ``False`` (a hard edge): ``out = donor`` inside the box, ``image`` outside.
            ``True``: ``out = G * donor + (1 - G) * image`` with ``G`` = :func:`soft_box_weights`
            (0.5 on the box border, so the blended patch covers about the same area).
        edge: width of the soft ramp, a fraction of ``min(H, W)`` (float) or pixels (int).

    Returns:
        ``(patched images (N, C, H, W) in the images' dtype, box mask (N, H, W) bool)``; the mask is the
        hard box in both modes, the region whose share of the CAM :func:`cam_mass_in_box` measures.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images should be a floating (N, C, H, W) tensor, got {getattr(images, 'shape', images)!r}")
    if not isinstance(donors, torch.Tensor) or donors.shape != images.shape:
        raise ValueError(
            f"donors should have the images' shape {tuple(images.shape)}, got {getattr(donors, 'shape', donors)!r}"
        )
    n, _, height, width = images.shape
    boxes = _check_boxes(box, n, height, width)
    mask = box_masks(boxes, height, width).to(images.device)
    if soft:
        weight = soft_box_weights(boxes, height, width, edge).to(device=images.device, dtype=images.dtype)
    else:
        weight = mask.to(images.dtype)
    weight = weight[:, None]
    return weight * donors.to(images.dtype) + (1 - weight) * images, mask


patch_probe = paste_patch  # the former name


def cam_mass_in_box(cams: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float32: the share of each map's total mass that lies inside its mask.

    ``cams``: ``(N, H, W)`` non-negative maps; ``mask``: ``(N, H, W)`` bool. A map that is zero
    everywhere gets NaN (it points nowhere); a uniform map gets the box's area fraction.
    """
    if cams.shape != mask.shape or cams.dim() != 3:
        raise ValueError(f"cams and mask should both be (N, H, W), got {tuple(cams.shape)} and {tuple(mask.shape)}")
    total = cams.flatten(1).sum(1).float()
    inside = (cams * mask.to(cams.dtype)).flatten(1).sum(1).float()
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float32).tiny),
                       torch.full_like(total, float("nan")))
