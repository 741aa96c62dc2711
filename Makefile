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
# The .venv's torch is pinned for reproducibility (with the torchvision built for it); the package
# itself accepts a range (pyproject.toml). Every other requirement is named in pyproject.toml alone.
TORCH  := torch==2.14.1 torchvision==0.29.1
MAX_JOBS ?= 2
DEMO_OUT ?= demo-out
CMAKE_DIR ?= build/cmake
# Empty: setup.py decides (CUDA kernels when torch has CUDA and nvcc is found). The demo on a
# machine without a GPU skips compiling kernels it cannot run (minutes on 2 cores).
WITH_CUDA ?=
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)

.PHONY: demo test build bench pytest ctest ctest-sanitize system-deps clean

# The pinned torch first, so that installing pyproject.toml's requirements (build tools, runtime
# dependencies) never moves it. The test and bench extras come in a second step that the demo
# does not wait for.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -qq $(TORCH)
	$(PIP) install -qq $$($(PY) tools/requirements.py build-system dependencies)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -qq $$($(PY) tools/requirements.py test bench)
	touch $@

# Fashion-MNIST's original IDX files come from Debian's dataset-fashion-mnist package; tests that
# need them skip with a reason where apt is not available.
system-deps:
	@if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "warning: could not install dataset-fashion-mnist; its tests will skip"; \
	fi

build: $(VENV)/.installed
	@mkdir -p build
	@echo "building pyrobust's compiled core (log: build/pip-build.log)"
	@PYROBUST_WITH_CUDA=$(WITH_CUDA) MAX_JOBS=$(MAX_JOBS) $(PIP) install -v --no-build-isolation --no-deps -e . \
		> build/pip-build.log 2>&1 || (tail -60 build/pip-build.log; exit 1)
	$(VENV)/bin/pyrobust info

pytest: build $(VENV)/.installed-test
	$(PY) -m pytest -q -ra

ctest: $(VENV)/.installed-test
	$(VENV)/bin/cmake -S . -B $(CMAKE_DIR) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		$$($(PY) tools/cuda_env.py --cmake-args) $(CMAKE_ARGS) > $(CMAKE_DIR).log 2>&1 \
		|| (cat $(CMAKE_DIR).log; exit 1)
	$(VENV)/bin/cmake --build $(CMAKE_DIR) -j $(MAX_JOBS)
	$(VENV)/bin/ctest --test-dir $(CMAKE_DIR) --output-on-failure

ctest-sanitize:
	$(MAKE) ctest CMAKE_DIR=build/cmake-sanitize CMAKE_ARGS=-DPYROBUST_SANITIZE=ON

test: system-deps build ctest pytest

demo: WITH_CUDA = $(if $(filter 1,$(HAVE_GPU)),,0)
demo: system-deps build
	$(VENV)/bin/pyrobust demo --out $(DEMO_OUT)

bench: build $(VENV)/.installed-test
	$(PY) benchmarks/bench_mix.py
	$(PY) benchmarks/bench_probe.py

clean:
	rm -rf build $(CMAKE_DIR) *.egg-info pyrobust/_C*.so pyrobust/_build_info.json
