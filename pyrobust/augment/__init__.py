"""Fused batch-mixing augmentation: SmoothMix (circle, square), CutMix, MixUp, Cutout.

Each mixer is configured in its constructor and called as ``mixer(images, labels) ->
(images, targets)``, like timm's ``Mixup`` and torchvision's ``v2.CutMix``; ``MixCollate``
runs one inside DataLoader workers; ``make_mixer`` builds one by name. See
``pyrobust.augment.mixers`` for the mask definitions. Drop-ins for timm's ``Mixup`` and
``FastCollateMixup`` are in ``pyrobust.augment.timm``.
"""

from pyrobust.augment.collate import MixCollate
from pyrobust.augment.mixers import BatchMixer, CutMix, Cutout, MixOutput, MixUp, SmoothMix
from pyrobust.augment.registry import MIXER_NAMES, MIXERS, make_mixer

__all__ = ["BatchMixer", "CutMix", "Cutout", "MIXERS", "MIXER_NAMES", "MixCollate", "MixOutput", "MixUp",
           "SmoothMix", "make_mixer"]
