"""Self-contained study reports: one HTML page with tables and embedded PNG figures.

Studies build a ``Report`` section by section; ``write`` puts ``report.html`` (figures inlined as
base64, so the one file can be mailed or archived) and each figure as a PNG beside it. Text is
escaped; numbers are formatted by the caller.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from pyrobust.tables import format_table, format_value, is_number  # noqa: E402

__all__ = ["Report", "format_table", "new_figure", "write_json"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.45 }
h1 { border-bottom: 2px solid #444 } h2 { margin-top: 1.8em; border-bottom: 1px solid #bbb }
.table-wrap { overflow-x: auto; max-width: 100%; margin: 0.8em 0 }
table { border-collapse: collapse } td, th { border: 1px solid #ccc; padding: 0.25em 0.7em }
th { background: #f0f0f0 } td.num { text-align: right; font-variant-numeric: tabular-nums }
figure { margin: 1em 0 } img { max-width: 100%; height: auto } figcaption { color: #555; font-size: 0.92em } .note { background: #fff8e0; padding: 0.6em 1em; border-left: 4px solid #e0b000 }
"""


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A matplotlib Figure not tied to pyplot's global state (safe in threads and servers)."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


class Report:
    """An HTML report assembled in order: headings, paragraphs, notes, tables and figures."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []
        self._figures: list[tuple[str, bytes]] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A highlighted paragraph: conclusions, caveats, what the data do or do not show."""
        self._parts.append(f'<p class="note">{html.escape(text)}</p>')

    def table(self, rows: Iterable[Sequence], columns: Sequence[str]) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for row in rows:
            tds = "".join(
                f'<td class="num">{html.escape(format_value(v))}</td>' if is_number(v)
                else f"<td>{html.escape(str(v))}</td>"
                for v in row
            )
            body.append(f"<tr>{tds}</tr>")
        # a table wider than the page scrolls inside its own box instead of widening the page
        self._parts.append(f'<div class="table-wrap"><table><tr>{head}</tr>{"".join(body)}</table></div>')

    def figure(self, fig: Figure, name: str, caption: str = "") -> None:
        """Embed a figure; it is also written as ``<name>.png`` beside the report."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        self._embed(name, buf.getvalue(), caption)

    def image(self, path: str, caption: str = "") -> None:
        """Embed an existing PNG file (copied beside the report under its own name)."""
        with open(path, "rb") as f:
            self._embed(os.path.splitext(os.path.basename(path))[0], f.read(), caption)

    def _embed(self, name: str, data: bytes, caption: str) -> None:
        self._figures.append((name, data))
        b64 = base64.b64encode(data).decode("ascii")
        self._parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def html(self) -> str:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            f"<p><small>generated {stamp} by pyrobust</small></p>{''.join(self._parts)}</body></html>\n"
        )

    def write(self, out_dir: str, name: str = "report.html") -> str:
        """Write the page and the PNGs atomically (each file renamed into place); returns the path."""
        os.makedirs(out_dir, exist_ok=True)
        for fig_name, data in self._figures:
            _atomic_write(os.path.join(out_dir, f"{fig_name}.png"), data)
        path = os.path.join(out_dir, name)
        _atomic_write(path, self.html().encode("utf-8"))
        return path


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Write JSON atomically (a crash never leaves a half-written results file)."""
    import json

    _atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8"))


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
