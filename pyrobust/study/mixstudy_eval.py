"""Evaluation for the mixing study: clean and corrupted accuracy, and the CAM patch probe.

Every corrupted test set is built once, vectorised over the whole (sub)set with
:func:`pyrobust.data.corrupt` (image ``i`` always gets the same draws, see its docstring), and every
trained model is scored on it before the next one is built — so all mixers see identical corrupted
images and the corruption cost is paid once, not once per model.

The probe (:mod:`pyrobust.explain`): each of ``cam_images`` test images gets a square patch of
another test image (side ``box_size`` × the image side, position seeded) pasted in with a hard edge,
and the same patch blended with a linear soft edge; Grad-CAM of the predicted class at the model's
last spatial layer is computed and the share of its mass inside the box is averaged over images.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pyrobust.models.adapter import model_input

__all__ = ["predict", "accuracy_grid", "last_spatial_layer", "cam_probe", "make_probe_set"]


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """``(N,)`` int64 predicted classes (on the CPU) for ``(N, C, H, W)`` images in ``[0, 1]``."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = model_input(images[start:start + batch_size], device)
        out.append(model(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy_grid(models: dict, clean_images: torch.Tensor, clean_labels: torch.Tensor,
                  corr_images: torch.Tensor, corr_labels: torch.Tensor, corr_indices: torch.Tensor,
                  corruptions: list, severities: list, device: torch.device, *, seed: int = 0,
                  progress: bool = True, on_corrupted: Callable | None = None) -> dict:
    """Clean and corrupted accuracy of every model.

    Args:
        models: ``{key: model}``.
        clean_images, clean_labels: the clean test set (``(N, C, H, W)`` in [0, 1], ``(N,)``).
        corr_images, corr_labels, corr_indices: the (sub)set that is corrupted, with the test-set
            index of each image (the corruption's per-image seed).
        corruptions, severities: the grid.

    Returns:
        ``{key: {"clean": float, "corrupted": {corruption: [accuracy per severity]}}}``, fractions.
    """
    from tqdm.auto import tqdm

    from pyrobust.data import corrupt

    results = {k: {"clean": float((predict(m, clean_images, device) == clean_labels).float().mean()),
                   "corrupted": {c: [] for c in corruptions}} for k, m in models.items()}
    bar = tqdm(total=len(corruptions) * len(severities), desc="corruptions", unit="set", disable=not progress,
               leave=False, dynamic_ncols=True)
    for name in corruptions:
        for severity in severities:
            bar.set_postfix(c=name, s=severity)
            corrupted = corrupt(corr_images, name, severity, seed=seed, indices=corr_indices.tolist())
            if on_corrupted is not None:
                on_corrupted(name, severity, corrupted)
            for key, model in models.items():
                acc = float((predict(model, corrupted, device) == corr_labels).float().mean())
                results[key]["corrupted"][name].append(acc)
            bar.update(1)
    bar.close()
    return results


def last_spatial_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Dotted name of the last module to finish whose output is ``(N, K, h, w)`` with ``h·w > 1``.

    That is the deepest feature map before global pooling — the usual Grad-CAM target. Modules called
    more than once in a forward pass (e.g. a shared ReLU) are skipped: their single output is ambiguous.
    """
    order, calls, handles = [], {}, []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(m, i, o, name=name):
            calls[name] = calls.get(name, 0) + 1
            if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[-1] * o.shape[-2] > 1:
                order.append(name)

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name in reversed(order):
        if calls.get(name) == 1:
            return name
    raise ValueError(f"{type(model).__name__} has no layer with a spatial (N, K, h, w) output for Grad-CAM")


def make_probe_set(images: torch.Tensor, labels: torch.Tensor, *, box_size: float, edge: float,
                   seed: int) -> dict:
    """Hard and soft patch probes of ``images``: donor of image ``i`` is image ``i - 1`` (cyclically)."""
    from pyrobust.explain import patch_probe, random_boxes

    n, _, h, w = images.shape
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    boxes = random_boxes(n, h, w, size=box_size, generator=gen)
    donors = images.roll(1, 0)
    hard, mask = patch_probe(images, donors, boxes)
    soft, _ = patch_probe(images, donors, boxes, soft=True, edge=edge)
    return {"images": images, "labels": labels, "donor_labels": labels.roll(1, 0), "boxes": boxes,
            "mask": mask, "hard": hard, "soft": soft}


def cam_probe(model: nn.Module, probe: dict, target_layer: str, device: torch.device,
              batch_size: int = 256) -> dict:
    """CAMs of ``model`` on the probe set and the per-image share of CAM mass inside the box.

    Returns CPU tensors: ``cam_hard``, ``cam_soft`` ``(N, H, W)``; ``mass_hard``, ``mass_soft`` ``(N,)``;
    ``pred_hard``, ``pred_soft`` ``(N,)`` predicted classes (the class each CAM explains).
    """
    from pyrobust.explain import cam_mass_in_box, grad_cam

    out = {}
    for kind in ("hard", "soft"):
        cams, preds = [], []
        for start in range(0, probe[kind].shape[0], batch_size):
            x = probe[kind][start:start + batch_size].to(device)
            with torch.no_grad():
                pred = model(x).argmax(1)
            cams.append(grad_cam(model, x, target_layer, pred).cpu())
            preds.append(pred.cpu())
        cam = torch.cat(cams)
        out[f"cam_{kind}"] = cam
        out[f"pred_{kind}"] = torch.cat(preds)
        out[f"mass_{kind}"] = cam_mass_in_box(cam, probe["mask"])
    return out
