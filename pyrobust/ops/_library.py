"""Load pyrobust's compiled core and check it matches the running torch.

The core (``pyrobust._C``) only registers ops in the ``torch.ops.pyrobust`` namespace. A core
built against another torch fails here with the two versions named (as xformers does), rather
than later with an undefined-symbol error. The build's record (``_build_info.json``, written by
setup.py beside the package) is read before the core is loaded, so the message can name the torch
the core was built for even when the core cannot load at all; where the record is missing, the
core's own ``pyrobust::build_info`` op answers after loading.
"""

from __future__ import annotations

import functools
import importlib
import json
import os

import torch

_REBUILD = (
    "rebuild it against the installed torch with `pip install --no-build-isolation .`"
    " (`make build` in a checkout), or install the torch it was built for"
)


def _recorded_info() -> dict:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _base_version(version: str) -> str:
    return version.split("+")[0]


def _check_torch(built: dict) -> None:
    built_for = built.get("torch")
    if built_for and _base_version(built_for) != _base_version(torch.__version__):
        raise ImportError(
            f"pyrobust's compiled core was built for torch {built_for}"
            f" (CUDA {built.get('cuda') or 'none'}), but torch {torch.__version__}"
            f" (CUDA {torch.version.cuda or 'none'}) is installed; {_REBUILD}."
        )


def _load() -> None:
    recorded = _recorded_info()
    _check_torch(recorded)
    try:
        importlib.import_module("pyrobust._C")
    except ImportError as exc:
        raise ImportError(
            f"pyrobust's compiled core could not be loaded ({exc}); it was built for torch"
            f" {recorded.get('torch') or 'unknown'}, torch {torch.__version__} is installed;"
            f" {_REBUILD}."
        ) from exc
    if not recorded:
        _check_torch(json.loads(torch.ops.pyrobust.build_info()))


_load()


@functools.lru_cache(maxsize=None)
def build_info() -> dict:
    """Versions the loaded core was compiled against, plus the build's recorded configuration."""
    info = dict(_recorded_info())
    info.update(json.loads(torch.ops.pyrobust.build_info()))
    return info
