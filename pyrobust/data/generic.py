"""Datasets built from numpy arrays, tensors and image folders.

Every dataset in :mod:`pyrobust.data` returns ``(image, label)`` with ``image`` a float32
tensor of shape ``(C, H, W)`` in ``[0, 1]`` and ``label`` a Python ``int``. The raw range is
kept on purpose: corruptions (:mod:`pyrobust.data.corruptions`) are defined on ``[0, 1]``
images, and the backbone's own input normalisation is applied inside the model adapter
(:class:`pyrobust.models.FeatureModel`).

Images are stored at their native resolution and resized on access (bilinear, antialiased
when shrinking), so a 70,000-image Fashion-MNIST set costs its 55 MB of ``uint8`` rather
than gigabytes of float32 at the backbone's input size. ``ArrayDataset`` also implements
``__getitems__``, which ``torch.utils.data.DataLoader`` calls with a whole batch of indices,
so resizing runs once per batch instead of once per image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "ImageFolderDataset", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _size_pair(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(image_size):
        pair = (int(image_size), int(image_size))
    elif (isinstance(image_size, Sequence) and not isinstance(image_size, str) and len(image_size) == 2
          and all(is_int(v) for v in image_size)):
        pair = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"image_size must be an int, an (H, W) pair of ints or None, got {image_size!r}")
    if min(pair) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return pair


def _check_channels(channels) -> int | None:
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None (keep the stored channels), got {channels!r}")
    return channels


def resize_and_match_channels(images: torch.Tensor, image_size, channels) -> torch.Tensor:
    """Resize a float batch ``(N, C, H, W)`` bilinearly and convert it to ``channels`` channels.

    Grey (``C == 1``) images are replicated to 3 channels; colour images are turned grey with the
    ITU-R 601 luma weights (the ones PIL's ``convert("L")`` uses) when ``channels == 1``.
    """
    size = _size_pair(image_size)
    if size is not None and tuple(images.shape[-2:]) != size:
        # antialias only acts when shrinking; on upsampling it equals plain bilinear.
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        images = images.clamp_(0.0, 1.0)
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def _to_nchw(images, layout: str) -> torch.Tensor:
    """Stored images as an (N, C, H, W) tensor of their original dtype (uint8 or float)."""
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise TypeError(f"images must be uint8 or floating point, got dtype {arr.dtype}")
        images = torch.as_tensor(arr)
    t = images
    if t.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"images must be uint8 or floating point, got dtype {t.dtype}")
    if layout not in ("auto", "nchw", "nhwc"):
        raise ValueError(f"layout must be 'auto', 'nchw' or 'nhwc', got {layout!r}")
    if t.dim() == 3:
        return t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError(f"images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {tuple(t.shape)}")
    if layout == "auto":
        channels_first = t.shape[1] in (1, 3)
        channels_last = t.shape[3] in (1, 3)
        if channels_first == channels_last:
            raise ValueError(
                f"cannot tell the channel axis of images with shape {tuple(t.shape)}; pass layout='nchw' or 'nhwc'"
            )
        layout = "nchw" if channels_first else "nhwc"
    if layout == "nhwc":
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {t.shape[1]} (shape {tuple(t.shape)})")
    return t.contiguous()


class ArrayDataset(Dataset):
    """Images and labels held in memory (numpy arrays or tensors).

    Args:
        images: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in {1, 3};
            ``uint8`` (scaled by 1/255) or floating point already in ``[0, 1]``.
        labels: ``(N,)`` integer class ids, ``>= 0``.
        image_size: output size, an int (square) or ``(H, W)``; ``None`` keeps the stored size.
        channels: 1 or 3 output channels (grey is replicated to 3); ``None`` keeps the stored ones.
        layout: ``"auto"`` (default; infers the channel axis), ``"nchw"`` or ``"nhwc"``.
        classes: optional class names, index = label.

    Items are ``(float32 tensor (channels, H, W) in [0, 1], int label)``.
    """

    def __init__(self, images, labels, *, image_size=None, channels=None, layout: str = "auto", classes=None):
        self.images = _to_nchw(images, layout)
        if self.images.is_floating_point():
            lo, hi = (float(v) for v in self.images.aminmax()) if self.images.numel() else (0.0, 1.0)
            if np.isnan(lo) or np.isnan(hi):
                raise ValueError("float images hold NaN; they must lie in [0, 1]")
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if lab.dim() != 1 or lab.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},) to match images, got {tuple(lab.shape)}"
            )
        if lab.is_floating_point() or lab.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
        self.labels = lab.long()
        if self.labels.numel() and int(self.labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, got {int(self.labels.min())}")
        self.image_size = _size_pair(image_size)
        self.channels = _check_channels(channels)
        n_cls = int(self.labels.max()) + 1 if self.labels.numel() else 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_cls)]
        if len(self.classes) < n_cls:
            raise ValueError(f"classes names {len(self.classes)} classes, but the labels reach label {n_cls - 1}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def _batch(self, index) -> torch.Tensor:
        x = self.images[index]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return resize_and_match_channels(x, self.image_size, self.channels)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = int(i) % len(self)
        return self._batch(slice(i, i + 1))[0], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]):
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self._batch(idx)
        return list(zip(x.unbind(0), self.labels[idx].tolist()))

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """All items (or ``indices``) as one batch: float32 ``(N, C, H, W)`` and int64 ``(N,)``."""
        idx = slice(None) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        return self._batch(idx), self.labels[idx]

    def subset(self, indices) -> "ArrayDataset":
        """A new ``ArrayDataset`` holding only ``indices`` (same size, channels, classes)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        out = ArrayDataset.__new__(ArrayDataset)
        out.images, out.labels = self.images[idx], self.labels[idx]
        out.image_size, out.channels, out.classes = self.image_size, self.channels, list(self.classes)
        return out


class ImageFolderDataset(Dataset):
    """Images in ``root/<class name>/<file>``, one sub-folder per class, read with PIL.

    Classes are the sub-folder names in sorted order (label = position), files are sorted
    within each class, and files whose extension is not in ``extensions`` are ignored.
    Images are converted to RGB (``channels=3``) or grey (``channels=1``) and resized
    bilinearly to ``image_size`` (``None`` keeps each file's size).

    Raises:
        ValueError: ``root`` is missing, not a folder, or holds no class folder with an image.
    """

    def __init__(self, root, *, image_size=None, channels: int = 3, extensions=IMAGE_EXTENSIONS, classes=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise ValueError(f"image folder {root!r} does not exist or is not a folder")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.root, self.channels, self.image_size = root, channels, _size_pair(image_size)
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f"image folder {root!r} has class folders {unknown} not among {self.classes}")
        exts = tuple(e.lower() for e in extensions)
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder):
                continue
            for f in sorted(os.listdir(folder)):
                if f.lower().endswith(exts):
                    self.samples.append((os.path.join(folder, f), label))
        if not self.samples:
            raise ValueError(
                f"image folder {root!r} holds no images in class sub-folders (expected root/<class>/<image>{exts[0]})"
            )

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s[1] for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB" if self.channels == 3 else "L")
            if self.image_size is not None and im.size != (self.image_size[1], self.image_size[0]):
                im = im.resize((self.image_size[1], self.image_size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(a.copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return t.float().div_(255.0), label

    def subset(self, indices) -> "ImageFolderDataset":
        """A new dataset with the same classes holding only ``indices``."""
        out = ImageFolderDataset.__new__(ImageFolderDataset)
        out.root, out.channels, out.image_size, out.classes = self.root, self.channels, self.image_size, self.classes
        out.samples = [self.samples[int(i)] for i in indices]
        return out
