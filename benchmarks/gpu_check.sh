#!/usr/bin/env bash
# One call on a GPU machine: build with the CUDA kernels, run the CUDA tests (CUDA against CPU
# against the float64 reference) and the benchmarks with --device cuda. Meant to finish in a few
# minutes; results go to $OUT (or ./gpu-check) as logs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(python3 - <<'PY' 2>/dev/null || echo 9.0
import subprocess
cap = subprocess.check_output(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], text=True)
print(cap.split()[0])
PY
)}"
nvidia-smi | tee "$out/nvidia-smi.txt"
make build 2>&1 | tail -5 | tee "$out/build.txt"
PY=.venv/bin/python
$PY -c "import pyrobust, torch; assert pyrobust.has_cuda_kernels() and torch.cuda.is_available(), 'no CUDA kernels or device'" || exit 1
timeout 240 $PY -m pytest -q -ra -k "cuda" tests/ 2>&1 | tail -25 | tee "$out/pytest-cuda.txt"
timeout 120 $PY benchmarks/bench_mix.py --device cuda --min-time 0.5 2>&1 | tee "$out/bench_mix_cuda.txt"
timeout 120 $PY benchmarks/bench_probe.py --device cuda --skip-slow 2>&1 | tee "$out/bench_probe_cuda.txt"
# the ImageNet-sized sweep of issue 3: 45 C on 1.28M x 2048 float16 features, K = 1000
timeout 240 $PY benchmarks/bench_probe.py --device cuda --n 1281167 --n-val 50000 --d 2048 --k 1000 --n-c 45 --half --skip-slow 2>&1 | tee "$out/bench_probe_imagenet_cuda.txt"
