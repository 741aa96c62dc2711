"""pyrobust: fast, measurable robust transfer learning.

Capabilities live in sub-packages that import only downward (see ``STYLE.md``):
``pyrobust.augment`` (fused batch mixing), ``pyrobust.probe`` (linear probes),
``pyrobust.features`` (feature cache), ``pyrobust.lpft`` (LP / FT / LP-FT),
``pyrobust.distortion``, ``pyrobust.theory``, ``pyrobust.data``, ``pyrobust.models``.

Importing ``pyrobust`` itself is cheap: the compiled core is loaded by the first
sub-package that needs it (``pyrobust.ops``).
"""

__version__ = "0.1.0"


def has_cuda_kernels() -> bool:
    """True when the compiled core was built with its CUDA kernels."""
    from pyrobust.ops._library import build_info

    return bool(build_info().get("cuda"))


def build_info() -> dict:
    """What the compiled core was built against: torch and CUDA versions, arch list, flags."""
    from pyrobust.ops._library import build_info as _info

    return dict(_info())
