"""Build pyrobust's compiled core, ``pyrobust._C``, with torch.utils.cpp_extension.

One extension holds every op: csrc/*.cpp, csrc/ops/*.cpp and csrc/ops/cpu/*.cpp always, and
csrc/ops/cuda/*.cu when CUDA kernels are built. The .so only registers ops with the PyTorch
dispatcher (a dummy ``PyInit__C``, no pybind), so it is built against the limited Python API.

CUDA kernels are built when torch has CUDA and nvcc is found, or with ``FORCE_CUDA=1``;
``PYROBUST_WITH_CUDA=0`` turns them off (fast CPU-only iteration). ``TORCH_CUDA_ARCH_LIST`` is
honoured; with no GPU visible it defaults to "8.0;9.0".

Two things found on the project's machines are handled here:
- ``nvcc`` on PATH may be a wrapper script, so torch's CUDA_HOME guess (the script's parent) is
  wrong and linking fails on ``-lcudart``: the real toolkit folder is resolved first.
- the toolkit may lack the cuBLAS/cuSPARSE headers that ATen's CUDA headers include; they come
  with the ``nvidia-*`` wheels installed beside torch, whose include folders are added.

The resolved configuration is printed first and recorded in ``pyrobust/_build_info.json`` and in
the .so itself (op ``pyrobust::build_info``) so the import can refuse a mismatched torch.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from cuda_env import nvidia_wheel_includes, resolve_cuda_home  # noqa: E402


CUDA_HOME = resolve_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # read by torch.utils.cpp_extension at import

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

if CUDA_HOME:
    cpp_extension.CUDA_HOME = CUDA_HOME


def want_cuda() -> bool:
    flag = os.environ.get("PYROBUST_WITH_CUDA")
    if flag is not None and flag.strip().lower() in ("0", "false", "no", "off"):
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


with_cuda = want_cuda()
if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    gpu_visible = False
    try:
        gpu_visible = torch.cuda.is_available()
    except Exception:
        pass
    if not gpu_visible:
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"

cpp_sources = sources("csrc/*.cpp") + sources("csrc/ops/*.cpp") + sources("csrc/ops/cpu/*.cpp")
cuda_sources = sources("csrc/ops/cuda/*.cu") if with_cuda else []

info = {
    "torch": torch.__version__,
    "cuda": torch.version.cuda if with_cuda else None,
    "cuda_home": CUDA_HOME if with_cuda else None,
    "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
    "python": sys.version.split()[0],
}
with open(os.path.join(ROOT, "pyrobust", "_build_info.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")

print("pyrobust build configuration:", flush=True)
for key, value in info.items():
    print(f"  {key:10s} {value}", flush=True)
print(f"  sources    {len(cpp_sources)} C++, {len(cuda_sources)} CUDA", flush=True)

# py_limited_api=True makes torch define Py_LIMITED_API itself.
defines = [
    ("PYROBUST_TORCH_VERSION", '"' + torch.__version__ + '"'),
    ("PYROBUST_CUDA_VERSION", '"' + (torch.version.cuda or "") + '"' if with_cuda else '""'),
]
# No --use_fast_math: its approximate exp / divide (flushing subnormals) would make the GPU masks
# drift from the shared formula of mix_profiles.h by more than the float64 tests allow, and the
# kernels are memory-bound anyway.
# -g0 undoes the -g that Python's own CFLAGS put first: debug info for torch's headers is most of
# the object files and a quarter of the compile time (PYROBUST_DEBUG=1 keeps it).
debug = os.environ.get("PYROBUST_DEBUG", "0").strip().lower() not in ("", "0", "false", "no", "off")
extra_compile_args = {
    "cxx": ["-O3", "-fopenmp", "-Wall", "-Wno-unused-function"] + ([] if debug else ["-g0"]),
    "nvcc": ["-O3", "-lineinfo"],
}
include_dirs = [os.path.join(ROOT, "csrc")]
if with_cuda:
    include_dirs += nvidia_wheel_includes()

if with_cuda:
    extension = cpp_extension.CUDAExtension(
        "pyrobust._C",
        cpp_sources + cuda_sources,
        include_dirs=include_dirs,
        define_macros=defines,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
else:
    extension = cpp_extension.CppExtension(
        "pyrobust._C",
        cpp_sources,
        include_dirs=include_dirs,
        define_macros=defines,
        extra_compile_args={"cxx": extra_compile_args["cxx"]},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
