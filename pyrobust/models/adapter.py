"""``FeatureModel``: one interface over any backbone — normalise, extract features, classify.

Every study in pyrobust needs the same three things from a network: the input normalisation its
weights expect, the penultimate features (for linear probes, feature caches and feature-change
measurements) and a linear head that can be swapped (LP → FT). ``FeatureModel`` holds exactly that:

- ``normalize``: applied inside ``forward``/``features``, so datasets hand over ``[0, 1]`` images;
- ``backbone``: maps normalised images ``(N, C, H, W)`` to features ``(N, D)``;
- ``head``: ``nn.Linear(D, num_classes)``; assign a new one or call :meth:`FeatureModel.reset_head`.

Constructors: :meth:`FeatureModel.from_module` (any ``nn.Module`` plus the name of the sub-module whose
output is the feature; 4-D outputs are globally average pooled) and :meth:`FeatureModel.from_classifier`
(a torchvision or timm classifier whose final ``nn.Linear`` is removed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrobust.checks import check_int

__all__ = ["FeatureModel", "Normalize", "LayerFeatures", "TFLITE_MEAN_STD", "IMAGENET_MEAN_STD", "model_input"]

# (x·255 − 127.5)/128 == (x − 0.5)/(128/255): the TF-Lite convention of the EfficientNet-Lite weights.
TFLITE_MEAN_STD = ((0.5, 0.5, 0.5), (128 / 255, 128 / 255, 128 / 255))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def model_input(images: torch.Tensor, device, channels_last: bool = True) -> torch.Tensor:
    """A batch as the networks are fed: on ``device`` and, when 4-D and ``channels_last``, in
    channels-last layout (same values; the results of a network differ only by round-off).

    Convolutions run faster on channels-last input on the CPU (oneDNN) and the GPU (NHWC tensor-core
    kernels), whatever the weights' layout: on this project's 2-core CPU an EfficientNet-Lite0 step at
    64 px (batch 64) takes 0.51 s against 0.94 s, a forward 0.17 s against 0.23 s. A model that calls
    ``.view`` on its 4-D input (an MLP on 3-channel images, say) needs ``channels_last=False``.
    """
    images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


class Normalize(nn.Module):
    """Per-channel ``(x − mean) / std`` for ``(N, C, H, W)`` inputs; buffers move with ``.to()``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        try:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"mean and std must be sequences of numbers, one per channel, got {mean!r}, {std!r}") from None
        if mean_t.numel() == 0 or mean_t.shape != std_t.shape or bool((std_t <= 0).any()):
            raise ValueError(f"mean and std must have the same length (>= 1) and std > 0, got {mean!r}, {std!r}")
        if not bool(torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
            raise ValueError(f"mean and std must be finite, got mean {mean!r}, std {std!r}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class _Captured(Exception):
    """Stops the wrapped module's forward once the feature layer has produced its output."""


class LayerFeatures(nn.Module):
    """The output of ``module``'s sub-module ``layer`` as ``(N, D)`` features.

    A forward hook captures the layer's output and stops the forward pass there, so the layers after
    it (e.g. the classifier) cost nothing. 4-D outputs ``(N, C, H, W)`` are averaged over ``H, W``;
    2-D outputs are returned as they are; other ranks raise ``ValueError``.
    """

    def __init__(self, module: nn.Module, layer: str):
        super().__init__()
        names = dict(module.named_modules())
        if layer not in names or layer == "":
            some = [n for n in names if n][-8:]
            raise ValueError(f"feature_layer {layer!r} is not a sub-module of {type(module).__name__}; "
                             f"last sub-modules: {', '.join(some)}")
        self.module, self.layer = module, layer
        self._out: torch.Tensor | None = None
        self._active = False
        names[layer].register_forward_hook(self._hook)

    def _hook(self, mod, inp, out):
        # only while this wrapper runs: calling the wrapped module directly must still work
        if self._active:
            self._out = out
            raise _Captured

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._out, self._active = None, True
        try:
            self.module(x)
        except _Captured:
            pass
        finally:
            self._active = False
        out, self._out = self._out, None
        if out is None:
            raise RuntimeError(f"feature layer {self.layer!r} was not called during the forward pass")
        if out.dim() == 4:
            return out.mean((2, 3))
        if out.dim() == 2:
            return out
        raise ValueError(f"feature layer {self.layer!r} outputs shape {tuple(out.shape)}; "
                         f"expected (N, D) or (N, C, H, W)")


def _infer_dim(backbone: nn.Module, normalize: nn.Module, input_shape) -> int:
    was_training = backbone.training
    backbone.eval()
    try:
        p = next(iter(backbone.parameters()), None)
        x = torch.zeros(2, *input_shape, device=p.device if p is not None else "cpu")
        with torch.no_grad():
            f = backbone(normalize(x))
    finally:
        backbone.train(was_training)
    if f.dim() != 2:
        raise ValueError(f"backbone must map images to (N, D) features, got shape {tuple(f.shape)}")
    return int(f.shape[1])


class FeatureModel(nn.Module):
    """Normalisation, backbone and linear head, with ``features()`` for the penultimate layer.

    Args:
        backbone: maps normalised images ``(N, C, H, W)`` to features ``(N, D)``.
        feature_dim: ``D``.
        num_classes: outputs of the fresh head ``nn.Linear(D, num_classes)``.
        normalize: module applied to the ``[0, 1]`` input first (default: identity).
        head: use this ``nn.Linear`` instead of a fresh one.

    ``features(x)``: float ``(N, D)``; ``forward(x)``: logits ``(N, num_classes)``.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 normalize: nn.Module | None = None, head: nn.Linear | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module mapping images to (N, D) features, got "
                            f"{type(backbone).__name__}")
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.backbone = backbone
        self.feature_dim = check_int(feature_dim, "feature_dim", min=1)
        if head is None:
            head = nn.Linear(self.feature_dim, num_classes)
        self._check_head(head)
        self.head = head

    def _check_head(self, head) -> None:
        if not isinstance(head, nn.Linear) or head.in_features != self.feature_dim:
            raise ValueError(f"head must be an nn.Linear with in_features={self.feature_dim}, got {head!r}")

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def reset_head(self, num_classes: int | None = None) -> nn.Linear:
        """Replace the head with a freshly initialised ``nn.Linear`` (same device/dtype); returns it."""
        n = self.num_classes if num_classes is None else check_int(num_classes, "num_classes", min=1)
        w = self.head.weight
        self.head = nn.Linear(self.feature_dim, n).to(device=w.device, dtype=w.dtype)
        return self.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, D)``: after normalisation and backbone, before the head."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @classmethod
    def from_module(cls, module: nn.Module, feature_layer: str, num_classes: int, *,
                    normalize: nn.Module | None = None, input_shape=(3, 64, 64)) -> "FeatureModel":
        """Features = output of ``module``'s sub-module ``feature_layer`` (pooled if 4-D).

        ``feature_dim`` is found by one forward pass in eval mode on zeros of ``input_shape`` ``(C, H, W)``.
        """
        if (not isinstance(input_shape, Sequence) or len(input_shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_shape)):
            raise ValueError(f"input_shape must be (C, H, W), three ints >= 1, got {input_shape!r}")
        backbone = LayerFeatures(module, feature_layer)
        norm = normalize if normalize is not None else nn.Identity()
        return cls(backbone, _infer_dim(backbone, norm, input_shape), num_classes, normalize=norm)

    @classmethod
    def from_classifier(cls, model: nn.Module, num_classes: int, *,
                        normalize: nn.Module | None = None) -> "FeatureModel":
        """Wrap a torchvision or timm classifier: its final ``nn.Linear`` becomes ``nn.Identity``.

        timm models are detected by ``reset_classifier``/``num_features`` and reset to 0 classes;
        for other models the last ``nn.Linear`` in module order is taken as the classifier (true for
        torchvision's ResNet, EfficientNet, MobileNet, ConvNeXt, RegNet, ViT, Swin ...). The model is
        modified in place.
        """
        if hasattr(model, "reset_classifier") and hasattr(model, "num_features"):
            model.reset_classifier(0)
            return cls(model, int(model.num_features), num_classes, normalize=normalize)
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear classifier; use from_module(feature_layer=...)")
        name, last = linears[-1]
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], nn.Identity())
        return cls(model, last.in_features, num_classes, normalize=normalize)
