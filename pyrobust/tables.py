"""Plain-text and Markdown tables: the one table printer of the studies and their results.

Numbers are formatted here (4 significant digits for small values, thousands separators for large
ones) and right-aligned; strings are printed as given, so callers that want a fixed format pass
strings.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["format_table", "format_value", "is_number"]


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_value(v) -> str:
    if isinstance(v, float):
        if abs(v) < 1e-3 and v != 0:
            return f"{v:.4g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def format_table(rows: Sequence[Sequence], columns: Sequence[str], *, markdown: bool = False) -> str:
    """``rows`` under ``columns``, padded: a terminal table, or with ``markdown=True`` a Markdown one.

    Numbers are right-aligned (Markdown: columns whose every value is a number).
    """
    cells = [[str(c) for c in columns]] + [[format_value(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if markdown:
        numeric = [bool(rows) and all(is_number(row[i]) for row in rows) for i in range(len(columns))]
        lines = []
        for n, row in enumerate(cells):
            lines.append("| " + " | ".join(c.rjust(w) if n and num else c.ljust(w)
                                            for c, w, num in zip(row, widths, numeric)) + " |")
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 1) + (":" if num else "-")
                                            for w, num in zip(widths, numeric)) + "|")
        return "\n".join(lines)
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and is_number(v) else c.ljust(w)
                               for c, w, v in zip(row, widths, rows[n - 1] if n else columns)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
