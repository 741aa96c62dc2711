"""Where the CUDA toolkit and the nvidia-* wheels' files are, for setup.py and the CMake build.

``nvcc`` on PATH may be a wrapper script (``exec /usr/local/cuda-X/bin/nvcc "$@"``), whose parent
folder is not a toolkit: torch's guess of CUDA_HOME from it makes linking fail on ``-lcudart``.
The headers and libraries ATen's CUDA build expects but the toolkit may lack (cuBLAS, cuSPARSE,
nvrtc) come with the nvidia-* wheels installed beside torch.

Run as a script, it prints the CMake cache arguments a CUDA build of libtorch needs even for
the CPU-only C++ tests: ``cmake ... $(python tools/cuda_env.py --cmake-args)``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys


def _is_toolkit(folder: str | None) -> bool:
    if not folder:
        return False
    nvcc = os.path.join(folder, "bin", "nvcc")
    if not os.path.isfile(nvcc):
        return False
    with open(nvcc, "rb") as f:
        if f.read(4) != b"\x7fELF":  # a wrapper script, not the compiler
            return False
    return any(
        os.path.exists(os.path.join(folder, lib, "libcudart.so")) for lib in ("lib64", "lib")
    )


def resolve_cuda_home() -> str | None:
    """The real CUDA toolkit folder, looking through wrapper scripts named nvcc."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        nvcc = os.path.realpath(nvcc)
        candidate = os.path.dirname(os.path.dirname(nvcc))
        if _is_toolkit(candidate):
            return candidate
        try:
            with open(nvcc, "r", errors="ignore") as f:
                text = f.read(65536)
        except OSError:
            text = ""
        for match in re.finditer(r"(/[^\s\"']+)/bin/nvcc", text):
            if _is_toolkit(match.group(1)):
                return match.group(1)
    for candidate in sorted(glob.glob("/usr/local/cuda*"), reverse=True):
        if _is_toolkit(candidate):
            return candidate
    return None


def nvidia_wheel_includes() -> list[str]:
    """Include folders of the nvidia-* wheels beside torch (cuBLAS, cuSPARSE, ... headers)."""
    found = []
    for site in sys.path:
        found += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted({os.path.realpath(p) for p in found if os.path.isdir(p)})


def nvidia_wheel_library(name: str) -> str | None:
    """Path of ``lib<name>.so*`` shipped in an nvidia-* wheel, if any."""
    for site in sys.path:
        found = sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", f"lib{name}.so*")))
        if found:
            return found[0]
    return None


def cmake_args() -> list[str]:
    args = []
    home = resolve_cuda_home()
    if home:
        args += [f"-DCUDA_TOOLKIT_ROOT_DIR={home}", f"-DCUDAToolkit_ROOT={home}"]
    nvrtc = nvidia_wheel_library("nvrtc")
    if nvrtc:
        args.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc}")
    return args


if __name__ == "__main__":
    if "--cmake-args" in sys.argv:
        print(" ".join(cmake_args()))
    else:
        print(resolve_cuda_home() or "")
