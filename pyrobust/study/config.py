"""The studies' configurations: dataclasses read from TOML files and command-line flags.

:class:`TomlConfig` is the shared machinery: every field is a key of one TOML table, unknown keys
and values of the wrong type are refused with :class:`~pyrobust.errors.UsageError`, and
``to_toml`` writes a file that ``from_toml`` reads back equal. :class:`StudyConfig` is the LP-FT
study's (``pyrobust demo`` runs ``StudyConfig()`` plus command-line overrides; ``pyrobust lpft
--config study.toml`` reads every field from a file; ``examples/study.toml`` holds the demo's
defaults). Its defaults are sized so that ``make demo``, set-up included, stays within 5 minutes on
a 2-core machine; ``--mixers`` adds CutMix and the others, ``--image-size 64 --epochs 4`` comes
closer to the paper's study, and ``ood_datasets`` (``--ood``) adds the user's own natural shifts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyrobust.errors import UsageError

DEFAULT_CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "fog")


def _check_value(what: str, value: Any, expected: Any) -> None:
    """``value`` is of the field's annotated type (``int``, ``float``, ``str``, ``bool`` or a list
    of one of them): ints pass for floats, bools never pass for numbers, and floats are finite."""
    if typing.get_origin(expected) is list:
        if not isinstance(value, list):
            raise UsageError(f"{what} should be a list, got {value!r}")
        (item,) = typing.get_args(expected)
        for v in value:
            _check_value(f"{what} (in {value!r})", v, item)
        return
    ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
    if isinstance(value, bool) and expected is not bool:
        ok = False
    if not ok:
        raise UsageError(f"{what} should be {getattr(expected, '__name__', expected)}, got {value!r}")
    if expected is float and not math.isfinite(value):
        raise UsageError(f"{what} should be a finite number, got {value!r}")


class TomlConfig:
    """Loading and writing for a configuration dataclass; ``TABLE`` names its TOML table."""

    TABLE = "study"
    HEADER = "# pyrobust study configuration"

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config"):
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            _check_value(f"{source}: key {key!r}", value, hints[key])
        return cls(**values)

    @classmethod
    def read_toml(cls, path: str) -> dict[str, Any]:
        """The keys of ``path``'s ``[TABLE]`` table (or its top-level keys), not yet checked.

        A file with the table holds nothing else: another table (a misspelt ``[studdy]``, say)
        or a key outside it is refused rather than ignored."""
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            raise UsageError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {path!r} is not valid TOML: {exc}") from None
        tables = sorted(k for k, v in values.items() if isinstance(v, dict))
        if cls.TABLE not in values:
            if tables:
                raise UsageError(f"{path}: unknown table(s) [{'], ['.join(tables)}]; the configuration "
                                 f"goes in a [{cls.TABLE}] table (or at the top level)")
            return values
        others = sorted(k for k in values if k != cls.TABLE)
        if others:
            raise UsageError(f"{path}: {', '.join(repr(k) for k in others)} outside the [{cls.TABLE}] table "
                             f"(misspelt? every setting goes in [{cls.TABLE}])")
        return values[cls.TABLE]

    @classmethod
    def from_toml(cls, path: str):
        return cls.from_dict(cls.read_toml(path), source=path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The configuration as a TOML document (one ``key = value`` per field)."""
        lines = [self.HEADER, f"[{self.TABLE}]"]
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


@dataclass
class StudyConfig(TomlConfig):
    """Everything the LP / FT / LP-FT study does; each field is a key of the TOML config."""

    TABLE: ClassVar[str] = "study"
    HEADER: ClassVar[str] = "# pyrobust LP-FT study configuration: `pyrobust lpft --config THIS_FILE`"

    dataset: str = "digits"
    backbone: str = "efficientnet_lite0"
    image_size: int = 48
    out: str = "demo-out"
    device: str = "auto"
    seed: int = 0
    # data: 0 keeps the whole split (digits: 1,000 train / 300 val / 497 test)
    max_train: int = 0
    max_val: int = 0
    max_test: int = 0
    batch_size: int = 64
    num_workers: int = 0
    # linear probe: the C grid logspace(c_min, c_max, n_cs), scalar standardisation as the LP-FT authors
    c_min: float = -5.0
    c_max: float = 2.0
    n_cs: int = 15
    standardize: str = "scalar"
    # fine-tuning: SGD momentum 0.9, cosine schedule, BatchNorm in eval mode (the authors' protocol)
    epochs: int = 2
    ft_lrs: list[float] = field(default_factory=lambda: [3e-3, 1e-2])
    lpft_lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4])
    seeds: list[int] = field(default_factory=lambda: [0])
    optimizer: str = "sgd"
    # the probe head LP and LP-FT use: "calibrated", the lowest val loss among the Cs within one standard
    # error of the best val accuracy; or "best-accuracy", the sweep's own choice (the LP-FT authors')
    lp_head: str = "calibrated"
    # mixers used during LP-FT fine-tuning, each at LP-FT's selected lr
    mixers: list[str] = field(default_factory=lambda: ["smoothmix-circle"])
    # natural-shift OOD sets: image folders (one sub-folder per class, named as the ID classes) or .npz
    # files (images, labels, optional classes); each reported under its folder's or file's name
    ood_datasets: list[str] = field(default_factory=list)
    # corrupted OOD sets: each corruption at each severity, applied to the ID test split (may be empty
    # when ood_datasets are given)
    corruptions: list[str] = field(default_factory=lambda: list(DEFAULT_CORRUPTIONS))
    severities: list[int] = field(default_factory=lambda: [2, 4])
    feature_change_batches: int = 4
    theory_seeds: int = 10

    @classmethod
    def quick(cls, **overrides) -> "StudyConfig":
        """A run of a minute or two for tests: small splits, one epoch, one lr each, two OOD sets."""
        base = dict(
            image_size=32, max_train=256, max_val=128, max_test=192, epochs=1, ft_lrs=[1e-2],
            lpft_lrs=[3e-4], mixers=["smoothmix-circle"], corruptions=["gaussian_noise", "contrast"],
            severities=[2, 4], n_cs=6, theory_seeds=3, feature_change_batches=2,
        )
        base.update(overrides)
        return cls(**base)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
