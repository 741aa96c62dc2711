"""Front-door argument checks shared by the public functions.

Each check names the argument and the value it got and says what is accepted: a ``TypeError`` for
a value of the wrong kind (a string where a number goes, a bool where a count goes), a
``ValueError`` for one out of range (NaN and inf included). They return the value converted
(``int``, ``float``, ``bool``), so a caller writes ``tol = check_real(tol, "tol", min=0,
min_open=True)`` once, at the door, and nothing inside re-checks it.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional

__all__ = ["check_bool", "check_choice", "check_int", "check_real"]


def _range_text(min, max, min_open, max_open) -> str:
    def text(v):
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if min is not None:
        parts.append(f"{'>' if min_open else '>='} {text(min)}")
    if max is not None:
        parts.append(f"{'<' if max_open else '<='} {text(max)}")
    return " and ".join(parts)


def check_int(value, name: str, *, min: Optional[int] = None, max: Optional[int] = None) -> int:
    """``value`` as an ``int`` (Python or numpy integer; not a bool, not a float) within ``[min, max]``."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        bound = _range_text(min, max, False, False)
        raise TypeError(f"{name} should be an int{' ' + bound if bound else ''}, got {type(value).__name__} {value!r}")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ValueError(f"{name} should be an int {_range_text(min, max, False, False)}, got {value}")
    return value


def check_real(value, name: str, *, min: Optional[float] = None, max: Optional[float] = None,
               min_open: bool = False, max_open: bool = False, finite: bool = True) -> float:
    """``value`` as a ``float`` (any real number but a bool) within the bounds; NaN is always refused,
    inf unless ``finite`` is False."""
    # exact types first: the ABC checks cost a microsecond each, and the mixers' wrappers run per batch
    if type(value) is not float and type(value) is not int and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} should be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    low = min is not None and (value <= min if min_open else value < min)
    high = max is not None and (value >= max if max_open else value > max)
    if low or high or math.isnan(value) or (finite and math.isinf(value)):
        bound = _range_text(min, max, min_open, max_open)
        raise ValueError(f"{name} should be a {'finite ' if finite else ''}number{' ' + bound if bound else ''}, "
                         f"got {value:g}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` as a ``bool`` (Python or numpy bool only: a string such as ``"no"`` is refused)."""
    if value is True or value is False:
        return value
    if type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} should be True or False, got {type(value).__name__} {value!r}")


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices`` (strings), else a ValueError listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} should be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value
