"""Print the requirements pyproject.toml lists, for pip: the one list of the project's dependencies.

    python tools/requirements.py build-system dependencies test bench

Each argument names a group: ``build-system`` (its ``requires``), ``dependencies`` (the runtime
ones) or an optional-dependency extra. One requirement a line.
"""

from __future__ import annotations

import os
import sys
import tomllib


def requirements(groups: list[str], path: str) -> list[str]:
    with open(path, "rb") as f:
        project = tomllib.load(f)
    extras = project["project"].get("optional-dependencies", {})
    out: list[str] = []
    for group in groups:
        if group == "build-system":
            out += project["build-system"]["requires"]
        elif group == "dependencies":
            out += project["project"]["dependencies"]
        elif group in extras:
            out += extras[group]
        else:
            known = ", ".join(["build-system", "dependencies", *extras])
            raise SystemExit(f"requirements.py: unknown group {group!r}; known: {known}")
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print("\n".join(requirements(sys.argv[1:], os.path.join(root, "pyproject.toml"))))
