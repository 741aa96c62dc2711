"""The bad-input harness: a case is a call and the error it must raise (type, and a regex that
names the argument), or a call that must succeed. Cases run in a worker process that is restarted
after a crash, so a segmentation fault or an abort fails one case, not the run; a case that does
not answer within its time limit fails as a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASE_TIMEOUT_S = 90.0
START_TIMEOUT_S = 180.0  # importing torch and pyrobust, on a loaded machine


@dataclasses.dataclass(frozen=True)
class Case:
    """``call()`` must raise ``expect`` with a message matching ``match`` (``re.search``), or, when
    ``expect`` is None, return a value for which ``check`` (if given) is true."""

    id: str
    call: Callable[[], Any]
    expect: Optional[type | tuple] = None
    match: str = ""
    check: Optional[Callable[[Any], bool]] = None


def bad(id: str, call: Callable[[], Any], expect, match: str) -> Case:
    return Case(id, call, expect, match)


def good(id: str, call: Callable[[], Any], check: Optional[Callable[[Any], bool]] = None) -> Case:
    return Case(id, call, None, "", check)


def table(*cases: Case) -> dict:
    """``{id: case}``; ids are unique within a table."""
    out = {}
    for c in cases:
        if c.id in out:
            raise ValueError(f"duplicate case id {c.id!r}")
        out[c.id] = c
    return out


def _short(value: Any, n: int = 300) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a repr that fails is reported, not raised
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= n else text[:n] + "..."


def evaluate(case: Case) -> dict:
    """Run ``case`` here and judge it: ``{"verdict": "ok" | "fail", "detail": str}``."""
    raised = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = case.call()
        except (Exception, SystemExit) as exc:  # SystemExit: an argparse exit is a result too
            raised = exc
            tb = traceback.format_exc(limit=-4)
    warned = "; ".join(sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}))
    if case.expect is None:
        if raised is not None:
            return {"verdict": "fail", "detail": f"raised {type(raised).__name__}: {raised}\n{tb}"}
        if case.check is not None and not case.check(value):
            return {"verdict": "fail", "detail": f"returned {_short(value)}, which fails the case's check"}
        return {"verdict": "ok", "detail": ""}
    if raised is None:
        return {"verdict": "fail", "detail": f"returned {_short(value)} without an error"
                + (f" (warnings: {warned})" if warned else "")}
    message = str(raised)
    if not isinstance(raised, case.expect):
        want = getattr(case.expect, "__name__", str(case.expect))
        return {"verdict": "fail", "detail": f"raised {type(raised).__name__}: {message}, expected {want}\n{tb}"}
    if not re.search(case.match, message):
        return {"verdict": "fail", "detail": f"message {message!r} does not match {case.match!r}"}
    return {"verdict": "ok", "detail": ""}


class Worker:
    """One worker process, fed ``{"module", "id"}`` lines on stdin, answering on its own pipe."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pyrobust-bad-input-")
        self.log_path = os.path.join(self.dir, "worker.log")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg",
                   PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.bad_input.worker", str(write_fd)],
                                         stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                         pass_fds=(write_fd,), cwd=self.dir, env=env)
        os.close(write_fd)
        self.fd = read_fd
        self.buffer = b""
        ready = self._answer(START_TIMEOUT_S)  # case time limits start once the imports are done
        if ready.get("verdict") != "ready":
            raise RuntimeError(f"the bad-input worker did not start: {ready['detail']}")

    def _log_tail(self, n: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def run(self, module: str, case_id: str, timeout: float) -> dict:
        self.proc.stdin.write((json.dumps({"module": module, "id": case_id}) + "\n").encode())
        self.proc.stdin.flush()
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict:
        """The worker's next JSON line, or a "hang" / "crash" verdict."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready = select.select([self.fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.kill()
                return {"verdict": "hang", "detail": f"no answer within {timeout:.0f} s\n{self._log_tail()}"}
            chunk = os.read(self.fd, 65536)
            if not chunk:
                code = self.proc.wait()
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                return {"verdict": "crash", "detail": f"the worker died ({how})\n{self._log_tail()}"}
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        os.close(self.fd)


class WorkerPool:
    """Runs cases in a worker, starting a fresh one after a crash or a hang."""

    def __init__(self, timeout: float = CASE_TIMEOUT_S):
        self.timeout = timeout
        self.worker: Optional[Worker] = None

    def run(self, module: str, case_id: str) -> dict:
        if self.worker is None or not self.worker.alive():
            if self.worker is not None:
                self.worker.close()
            self.worker = Worker()
        result = self.worker.run(module, case_id, self.timeout)
        if result["verdict"] in ("crash", "hang"):
            self.worker.close()
            self.worker = None
        return result

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
