"""The bad-input worker: reads ``{"module", "id"}`` lines on stdin, runs each case of that table
and writes its verdict as one JSON line on the file descriptor given as its argument."""

from __future__ import annotations

import importlib
import json
import os
import sys


def main() -> None:
    out = os.fdopen(int(sys.argv[1]), "w")
    import torch

    torch.set_num_threads(1)
    import pyrobust.ops  # noqa: F401  (the compiled core: loaded before the first case's clock starts)
    from tests.bad_input.harness import evaluate

    out.write(json.dumps({"verdict": "ready", "detail": ""}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        cases = importlib.import_module(req["module"]).CASES
        result = evaluate(cases[req["id"]])
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
