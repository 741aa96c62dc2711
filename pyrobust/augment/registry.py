"""Batch mixers by name: ``make_mixer("cutmix", num_classes, alpha=0.5, generator=g)``.

Each name builds its mixer with the mixer's own defaults; keyword arguments override them and are
passed to the constructor unchanged. The studies choose their settings and seeds on top of this.
"""

from __future__ import annotations

from typing import Callable

from pyrobust.augment.mixers import BatchMixer, CutMix, Cutout, MixUp, SmoothMix

__all__ = ["MIXERS", "MIXER_NAMES", "make_mixer"]


def _smoothmix_circle(num_classes: int, **kwargs) -> SmoothMix:
    return SmoothMix(num_classes, "circle", **kwargs)


def _smoothmix_square(num_classes: int, **kwargs) -> SmoothMix:
    return SmoothMix(num_classes, "square", **kwargs)


# name -> factory(num_classes, **overrides); ordered from the least to the most image-changing mix
MIXERS: dict[str, Callable[..., BatchMixer]] = {
    "cutout": Cutout,
    "mixup": MixUp,
    "cutmix": CutMix,
    "smoothmix-circle": _smoothmix_circle,
    "smoothmix-square": _smoothmix_square,
}
MIXER_NAMES = tuple(MIXERS)


def make_mixer(name: str, num_classes: int, **kwargs) -> BatchMixer:
    """The mixer called ``name`` (one of :data:`MIXER_NAMES`) for ``num_classes`` classes.

    ``kwargs`` go to its constructor (``alpha``, ``size``, ``p``, ``generator``, ...); what is not
    given keeps the mixer's default. An unknown name raises ``ValueError`` listing the known ones.
    """
    factory = MIXERS.get(name)
    if factory is None:
        raise ValueError(f"unknown mixer {name!r}; known: {', '.join(MIXER_NAMES)}")
    return factory(num_classes, **kwargs)
