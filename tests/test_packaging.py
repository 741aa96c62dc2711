"""pyrobust outside its checkout: the sdist builds an abi3 wheel, and the wheel, installed into
another folder with ``--no-deps``, loads its ops, mixes a batch, sweeps a probe and says plainly
which commands need a checkout. Also the import's refusal of a core built for another torch.

The build writes into its source folder (the compiled core, ``_build_info.json``), so it runs on
a copy of the tracked tree; CPU kernels only, to keep CI time (a few minutes on two cores).
"""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SMOKE = r"""
import os, sys
import numpy as np
import torch
import pyrobust
assert pyrobust.__file__.startswith(sys.argv[1]), pyrobust.__file__
from pyrobust.augment import SmoothMix
from pyrobust.probe import probe_sweep
from pyrobust import cli
info = pyrobust.build_info()
assert info["torch"].split("+")[0] == torch.__version__.split("+")[0], info
mixer = SmoothMix(num_classes=5, generator=torch.Generator().manual_seed(0))
x, t = mixer(torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0]))
assert x.shape == (6, 3, 16, 16) and t.shape == (6, 5)
assert torch.allclose(t.sum(1), torch.ones(6))
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 8)).astype(np.float32)
y = (X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
result = probe_sweep(X[:150], y[:150], X[150:], y[150:], Cs=[0.01, 1.0], progress=False)
assert result.val_accuracy.max() > 0.8, result.val_accuracy
assert cli.main(["bench"]) == 2
print("smoke ok")
"""


def _tracked_copy(dest: str) -> None:
    """The tracked files of the checkout (what a clone has), or the tree less build outputs."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                               timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = []
    files = [f for f in files if f and os.path.exists(os.path.join(ROOT, f))]
    if not files:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.so", "*.egg-info", "__pycache__", "_build_info.json"))
        return
    for f in files:
        os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def _build(kind: str, src: str, outdir: str) -> str:
    env = dict(os.environ, PYROBUST_WITH_CUDA="0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    proc = subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--no-isolation",
                           "--outdir", outdir], cwd=src, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (built,) = glob.glob(os.path.join(outdir, "*.tar.gz" if kind == "sdist" else "*.whl"))
    return built


def test_sdist_builds_an_abi3_wheel_that_works_outside_the_checkout(tmp_path):
    pytest.importorskip("build")
    tree = tmp_path / "tree"
    _tracked_copy(str(tree))
    sdist = _build("sdist", str(tree), str(tmp_path / "dist"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        for needed in ("setup.py", "pyproject.toml", "CMakeLists.txt", "tools/cuda_env.py",
                       "csrc/pyrobust.cpp", "csrc/ops/mix.cpp", "csrc/ops/cuda/mix_kernel.cu",
                       "pyrobust/__init__.py"):
            assert f"{top}/{needed}" in names, needed
        assert not any(n.endswith((".so", "_build_info.json")) for n in names)
        tar.extractall(tmp_path / "unpacked", filter="data")

    wheel = _build("wheel", str(tmp_path / "unpacked" / top), str(tmp_path / "wheels"))
    assert wheel.endswith("-cp311-abi3-linux_x86_64.whl") or "abi3" in os.path.basename(wheel), wheel
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("pyrobust/_C") and n.endswith(".so") for n in names), names
    assert "pyrobust/_build_info.json" in names
    assert not any(n.startswith(("csrc/", "tests/", "benchmarks/")) for n in names)

    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(site), wheel], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", _SMOKE, str(site)], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smoke ok" in proc.stdout
    assert "source checkout" in proc.stderr  # pyrobust bench, from a wheel


def test_import_refuses_a_core_built_for_another_torch():
    # The record is read before the core loads, so both versions are named even where the core
    # could not load at all.
    script = "import torch; torch.__version__ = '1.0.0'; import pyrobust.ops"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    built_for = torch.__version__.split("+")[0]
    assert "built for torch " + built_for in proc.stderr, proc.stderr[-2000:]
    assert "torch 1.0.0" in proc.stderr and "rebuild it" in proc.stderr
