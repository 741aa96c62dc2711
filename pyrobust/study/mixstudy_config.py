"""The mixing study's configuration: defaults, ``--quick`` sizes, TOML files and command-line flags.

``pyrobust mixstudy`` runs ``MixStudyConfig()`` (``MixStudyConfig.quick()`` with ``--quick``), or the
``[mixstudy]`` table of ``--config FILE``, with each command-line flag given overriding its field.

Default run: Fashion-MNIST's 60,000 training images (digits when the files are absent), 28 px,
``small_resnet`` width 16, 3 epochs, batch 256, the baseline and five mixers, one seed; corruptions
on a seeded subset of 2,000 test images. ``quick``: digits at 16 px, width 8, 6 epochs, severities
1, 3, 5 and 200 test images per corrupted set, a pipeline check of well under two minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyrobust.study.config import TomlConfig

__all__ = ["MixStudyConfig", "QUICK"]

# What --quick (or ``quick = true``) changes; the other fields keep their defaults.
QUICK = dict(dataset="digits", epochs=6, image_size=16, batch_size=64, width=8, corruption_images=200,
             cam_images=64, severities=[1, 3, 5])


def _every_arm() -> list:
    from pyrobust.study.mixstudy_train import MIXER_NAMES

    return list(MIXER_NAMES)


@dataclass
class MixStudyConfig(TomlConfig):
    """Everything ``pyrobust mixstudy`` does; each field is a key of the TOML config and most a flag."""

    TABLE: ClassVar[str] = "mixstudy"
    HEADER: ClassVar[str] = "# pyrobust mixing study configuration: `pyrobust mixstudy --config THIS_FILE`"

    # "auto": fashion-mnist when its files are installed, digits otherwise; or an image folder
    dataset: str = "auto"
    model: str = "small_resnet"
    width: int = 16  # small_resnet's first-stage channels
    # "none" (the baseline: one-hot targets, no mixing) and mixer names
    mixers: list[str] = field(default_factory=_every_arm)
    epochs: int = 3
    seeds: int = 1  # seeds 0 .. seeds - 1
    out: str = "mixstudy-out"
    quick: bool = False
    device: str = "cpu"
    image_size: int = 28
    batch_size: int = 256
    workers: int = 1  # DataLoader worker processes that mix
    threads: int = 0  # intra-op threads; 0: the CPU count minus the workers, at least 1
    lr: float = 0.1  # peak SGD learning rate
    corruption_images: int = 2000  # test images per corrupted set; 0: all
    cam_images: int = 500
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])

    @classmethod
    def quick_run(cls, **overrides) -> "MixStudyConfig":
        """The ``--quick`` run: :data:`QUICK` on the defaults, then ``overrides``."""
        return cls(**{**QUICK, "quick": True, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "MixStudyConfig":
        cfg = super().from_dict(values, source=source)
        return cls.quick_run(**values) if cfg.quick else cfg
