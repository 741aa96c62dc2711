"""Load pyrobust's compiled core and check it matches the running torch.

The core (``pyrobust._C``) only registers ops in the ``torch.ops.pyrobust`` namespace. A core
built against another torch fails here with the two versions named (as xformers does), rather
than later with an undefined-symbol error.
"""

from __future__ import annotations

import functools
import importlib
import json
import os

import torch

_REBUILD = "rebuild it with `pip install --no-build-isolation -e .` (or `make build`)"


def _recorded_info() -> dict:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _base_version(version: str) -> str:
    return version.split("+")[0]


def _load() -> None:
    recorded = _recorded_info()
    built_for = recorded.get("torch")
    if built_for and _base_version(built_for) != _base_version(torch.__version__):
        raise ImportError(
            f"pyrobust's compiled core was built for torch {built_for}"
            f" (CUDA {recorded.get('cuda') or 'none'}), but torch {torch.__version__}"
            f" (CUDA {torch.version.cuda or 'none'}) is installed; {_REBUILD}."
        )
    try:
        importlib.import_module("pyrobust._C")
    except ImportError as exc:
        raise ImportError(
            f"pyrobust's compiled core could not be loaded ({exc}); it was built for torch"
            f" {built_for or 'unknown'}, torch {torch.__version__} is installed; {_REBUILD}."
        ) from exc


_load()


@functools.lru_cache(maxsize=None)
def build_info() -> dict:
    """Versions the loaded core was compiled against, plus the build's recorded configuration."""
    info = dict(_recorded_info())
    info.update(json.loads(torch.ops.pyrobust.build_info()))
    return info


def _check_versions() -> None:
    compiled = json.loads(torch.ops.pyrobust.build_info())
    if _base_version(compiled["torch"]) != _base_version(torch.__version__):
        raise ImportError(
            f"pyrobust's compiled core was built for torch {compiled['torch']} with CUDA"
            f" {compiled['cuda'] or 'none'}, you have torch {torch.__version__} with CUDA"
            f" {torch.version.cuda or 'none'}; {_REBUILD}."
        )


_check_versions()
