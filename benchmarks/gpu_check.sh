#!/usr/bin/env bash
# The checks that need a GPU, in two calls that each fit a short lease:
#
#   bash benchmarks/gpu_check.sh tests   # ~5 min at most: build with the CUDA kernels, CUDA tests
#   bash benchmarks/gpu_check.sh bench   # the benchmarks: ImageNet-sized probe sweep, bench_mix
#
# The `bench` phase builds too when the core is missing (a fresh machine), so either may run first.
# The lent machine reaches no package registry, so the pinned torch of `make` cannot be installed
# there: the extension is built in place against the machine's own python3 and torch (the build
# records that torch, and the import checks it) and run from the source tree. Every step has its
# own timeout and prints as it goes (logs also go to $OUT, or ./gpu-check), so a run cut short
# still reports what it measured.
#
#   PY=.venv/bin/python bash benchmarks/gpu_check.sh tests   # elsewhere, with another interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
phase="${1:-}"
case "$phase" in
  tests | bench) ;;
  *) echo "usage: bash benchmarks/gpu_check.sh tests|bench" >&2; exit 2 ;;
esac
out="${OUT:-gpu-check}"
mkdir -p "$out"
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)}"
[ -n "$TORCH_CUDA_ARCH_LIST" ] || export TORCH_CUDA_ARCH_LIST=9.0

step() {  # step NAME SECONDS COMMAND...: run with a timeout, print and log to $out/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  return "$rc"
}

core_ready() {
  $PY -c "import pyrobust, torch; assert pyrobust.has_cuda_kernels() and torch.cuda.is_available()" 2>/dev/null
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$out/machine.txt"

if [ "$phase" = tests ] || ! core_ready; then
  step build 200 env PYROBUST_WITH_CUDA=1 MAX_JOBS="$(nproc)" "$PY" setup.py -q build_ext --inplace || exit 1
fi
core_ready || { echo "no CUDA kernels or no device after the build" >&2; exit 1; }

if [ "$phase" = tests ]; then
  # Every CUDA case (CUDA against CPU against the float64 reference), the new kernels' first run.
  step pytest_cuda 90 "$PY" -m pytest -q -ra -k cuda -p no:cacheprovider tests
  exit $?
fi

step bench_mix 120 "$PY" benchmarks/bench_mix.py --device cuda --min-time 0.3
step bench_mix_256 60 "$PY" benchmarks/bench_mix.py --device cuda --min-time 0.3 --batch 256 --quick
# 45 values of C on ImageNet-sized float16 features (1.28M x 2048, K = 1000): the GPU sweep target.
step probe_imagenet 200 "$PY" benchmarks/bench_probe.py --device cuda --n 1281167 --n-val 50000 \
  --d 2048 --k 1000 --n-c 45 --half --skip-slow --progress
echo "logs in $out"
