#!/usr/bin/env bash
# One call on a GPU machine: build with the CUDA kernels, run the ImageNet-sized probe sweep,
# the CUDA tests (CUDA against CPU against the float64 reference) and the mixing and probe
# benchmarks with --device cuda. Logs go to $OUT (or ./gpu-check), one file per step.
#
# The lent machine reaches no package registry, so the pinned torch of `make` cannot be
# installed there: the extension is built in place against the machine's own python3 and torch
# (the build records that torch, and the import checks it), and run from the source tree.
# Budget: about 6 minutes in all (build 2-3, sweep 1-2, tests 1, benchmarks 1-2); each step has
# its own timeout, and every step's output is unbuffered, so a step cut short still leaves its log.
#
#   bash benchmarks/gpu_check.sh            # device: OUT is set by the tool
#   PY=.venv/bin/python bash benchmarks/gpu_check.sh   # elsewhere, with another interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
PY="${PY:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)}"
[ -n "$TORCH_CUDA_ARCH_LIST" ] || export TORCH_CUDA_ARCH_LIST=9.0
step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $out/NAME.txt
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt" | tail -40
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  return "$rc"
}
{ nvidia-smi; $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$out/machine.txt"
step build 300 env PYROBUST_WITH_CUDA=1 MAX_JOBS="$(nproc)" "$PY" setup.py -q build_ext --inplace || exit 1
$PY -c "import pyrobust, torch; assert pyrobust.has_cuda_kernels() and torch.cuda.is_available(), 'no CUDA kernels or device'" || exit 1
# issue 3's target first: 45 C on ImageNet-sized float16 features (1.28M x 2048, K = 1000)
step probe_imagenet 240 "$PY" benchmarks/bench_probe.py --device cuda --n 1281167 --n-val 50000 \
  --d 2048 --k 1000 --n-c 45 --half --skip-slow --progress
step pytest_cuda 180 "$PY" -m pytest -q -ra -k cuda -p no:cacheprovider tests/test_mix_op.py tests/test_mixers.py \
  tests/test_collate.py tests/test_probe.py
step bench_mix 150 "$PY" benchmarks/bench_mix.py --device cuda --min-time 0.3
step bench_mix_256 90 "$PY" benchmarks/bench_mix.py --device cuda --min-time 0.3 --batch 256 --quick
step probe_default 90 "$PY" benchmarks/bench_probe.py --device cuda --skip-slow
echo "logs in $out"
