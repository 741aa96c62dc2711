"""``python -m tests.bad_input [FAMILY ...]``: run the tables outside pytest and print each case
that does not pass, with the first line of what it did (for working through a table)."""

import importlib
import sys

from tests.bad_input.harness import WorkerPool


def main(argv) -> int:
    from tests.test_bad_input import TABLES

    pool = WorkerPool()
    failed = total = 0
    try:
        for name in argv or TABLES:
            module = f"tests.bad_input.cases_{name}"
            for case_id in importlib.import_module(module).CASES:
                total += 1
                result = pool.run(module, case_id)
                if result["verdict"] != "ok":
                    failed += 1
                    first = result["detail"].strip().splitlines()[0][:220] if result["detail"].strip() else ""
                    print(f"{result['verdict'].upper():5s} {name}:{case_id}: {first}")
    finally:
        pool.close()
    print(f"{total - failed} of {total} cases pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
