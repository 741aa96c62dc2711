"""Training for the mixing study: one classifier from scratch per (mixer, seed), everything else equal.

Fairness between mixers is by construction, and tested:

- initialisation: the model is built under ``torch.manual_seed(seed)`` in a forked RNG state, so every
  mixer starts from the same weights for a given seed;
- data order: a ``torch.Generator`` seeded from ``seed`` alone drives the batch sampler, and another
  one the DataLoader's worker seeds, so every mixer sees the same batches in the same order;
- schedule: SGD with Nesterov momentum 0.9, weight decay 5e-4, linear warm-up over the first 3 % of
  steps then cosine decay to 0 (per step), batch size and epochs shared.

The mixer has its own generator (seeded from ``seed`` too) and runs in the DataLoader workers through
:class:`pyrobust.augment.MixCollate`; the "none" baseline gets one-hot targets from the same pipeline,
so the loss (cross-entropy against soft targets) is the same function for every mixer.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from pyrobust.augment import MIXER_NAMES as AUGMENT_MIXER_NAMES
from pyrobust.augment import MixCollate
from pyrobust.augment import make_mixer as build_mixer
from pyrobust.lpft.finetune import lr_at, soft_cross_entropy
from pyrobust.models.adapter import model_input

__all__ = [
    "MIXER_NAMES",
    "MIXER_SETTINGS",
    "study_mixer",
    "make_mixer",
    "BatchTensorDataset",
    "OneHotCollate",
    "make_train_loader",
    "build_model",
    "train_model",
    "soft_cross_entropy",
]

# The study's arms: the baseline "none" (no mixing, one-hot targets) and every mixer.
MIXER_NAMES = ("none", *AUGMENT_MIXER_NAMES)

# The papers' settings, given explicitly so that a change of a mixer's default does not change the
# study: CutMix and MixUp alpha = 1, Cutout a box of half the image side filled with 0, SmoothMix
# circle s ~ U(0.25, 0.5) and square edge k = 0.2.
MIXER_SETTINGS = {
    "cutout": {"size": 0.5, "fill": 0.0},
    "mixup": {"alpha": 1.0},
    "cutmix": {"alpha": 1.0},
    "smoothmix-circle": {"sigma_range": (0.25, 0.5)},
    "smoothmix-square": {"smooth": 0.2},
}


def study_mixer(name: str, num_classes: int, seed: int):
    """The batch mixer ``name`` (one of :data:`MIXER_NAMES`) with the study's settings, or ``None`` for
    the ``"none"`` baseline. Its generator is seeded from ``seed`` apart from the data order's."""
    if name == "none":
        return None
    if name not in MIXER_SETTINGS:
        raise ValueError(f"unknown mixer {name!r}; known: {', '.join(MIXER_NAMES)}")
    gen = torch.Generator().manual_seed(1_000_003 * int(seed) + 17)
    return build_mixer(name, num_classes, generator=gen, **MIXER_SETTINGS[name])


make_mixer = study_mixer  # the name this function had first


class BatchTensorDataset(Dataset):
    """In-memory images and labels indexed by a whole batch of indices at once.

    ``ds[indices] -> (images (B, C, H, W) float32, labels (B,) int64, indices (B,) int64)``; used with a
    ``BatchSampler`` and ``batch_size=None`` so a batch is one gather, not B item fetches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx], idx


def _identity(batch):
    return batch


class OneHotCollate:
    """The "none" mixer's collate: ``(images, labels, *rest) -> (images, one-hot float32, *rest)``."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def __call__(self, batch):
        images, labels, *rest = batch
        return (images, F.one_hot(labels, self.num_classes).float(), *rest)


def make_train_loader(dataset: BatchTensorDataset, mixer, *, seed: int, batch_size: int, workers: int,
                      num_classes: int) -> DataLoader:
    """A loader of ``(images, soft targets (B, K) float32, indices (B,))`` batches, mixed in the workers.

    The batch order depends on ``seed`` only (not on the mixer); the last incomplete batch is dropped
    so every step sees ``batch_size`` images.
    """
    order = torch.Generator().manual_seed(int(seed))
    sampler = BatchSampler(RandomSampler(dataset, generator=order), batch_size, drop_last=True)
    collate = OneHotCollate(num_classes) if mixer is None else MixCollate(mixer, collate_fn=_identity)
    return DataLoader(
        dataset, sampler=sampler, batch_size=None, collate_fn=collate, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(int(seed) + 1),
    )


def build_model(model_name: str, num_classes: int, in_channels: int, image_size: int, width: int,
                seed: int) -> nn.Module:
    """The study's classifier, initialised from ``seed`` alone (the global RNG is left untouched)."""
    from pyrobust.models import get_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if model_name.strip().lower().replace("-", "_") == "small_resnet":
            return get_backbone("small_resnet", num_classes, image_size, in_channels=in_channels, width=width)
        return get_backbone(model_name, num_classes, image_size)


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 3 % of the steps, then cosine decay to 0."""
    return lr_at(step, lr=1.0, total=total, warmup=max(1, int(0.03 * total)), schedule="cosine")


def train_model(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float, device: torch.device,
                desc: str = "train", progress: bool = True, max_steps: Optional[int] = None) -> dict:
    """Train ``model`` in place; returns ``{"seconds", "images", "images_per_s", "data_wait_s", "final_loss"}``.

    ``images_per_s`` counts the images that went through the optimiser per second of the training
    loop (data waiting included); ``data_wait_s`` is the time the loop spent blocked on the loader,
    which stays near zero while mixing keeps up in the workers.
    """
    from tqdm.auto import tqdm

    model.to(device=device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(loader) if max_steps is None else min(len(loader), max_steps)
    total = max(1, steps_per_epoch * epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total))
    seen, wait, loss_ema = 0, 0.0, float("nan")
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    for _ in range(epochs):
        it = iter(loader)
        for _step in range(steps_per_epoch):
            t0 = time.perf_counter()
            images, targets, _ = next(it)
            wait += time.perf_counter() - t0
            images = model_input(images, device)
            targets = targets.to(device, non_blocking=True)
            loss = soft_cross_entropy(model(images), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += images.shape[0]
            value = loss.item()
            loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
            bar.update(1)
            if bar.n % 20 == 0:
                bar.set_postfix(loss=f"{loss_ema:.3f}")
        del it
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    model.eval()
    return {"seconds": seconds, "images": seen, "images_per_s": seen / max(seconds, 1e-9),
            "data_wait_s": wait, "final_loss": loss_ema}
