"""Bad inputs on every entry point (tables in ``tests/bad_input/``): each case must raise its
error with a message naming the argument, or succeed, and never crash or hang. Cases run in a
worker process that is restarted after a crash, so a crash fails one case."""

import importlib

import pytest

from tests.bad_input.harness import WorkerPool

TABLES = ["probe", "features", "lpft", "distortion", "data", "models", "theory", "ops", "mixers", "cli", "properties"]
PARAMS = []
for _name in TABLES:
    _module = f"tests.bad_input.cases_{_name}"
    for _id in importlib.import_module(_module).CASES:
        PARAMS.append(pytest.param(_module, _id, id=f"{_name}:{_id}"))


@pytest.fixture(scope="module")
def worker():
    pool = WorkerPool()
    yield pool
    pool.close()


@pytest.mark.parametrize("module, case_id", PARAMS)
def test_bad_input(worker, module, case_id):
    result = worker.run(module, case_id)
    assert result["verdict"] == "ok", f"{result['verdict']}: {result['detail']}"
