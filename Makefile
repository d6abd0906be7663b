# Hourglass: the two commands a user needs are `make demo` and `make test`.
# Both install what they need (a project-local Python venv holding the ONNX
# Runtime shared library) and are safe to run again.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.hourglass-runtime
MODELS_STAMP := $(VENV)/.hourglass-models
GPU_VENV := .venv-gpu
GPU_STAMP := $(GPU_VENV)/.hourglass-gpu-runtime
GPU_LIBS_STAMP := $(GPU_VENV)/.hourglass-gpu-libs
GPU_TRT_STAMP := $(GPU_VENV)/.hourglass-gpu-tensorrt
# 1: `make setup-gpu` adds TensorRT 10 (about 1.5 GB) for --device tensorrt.
GPU_TENSORRT ?= 0
CARGO ?= cargo
# 1: `make test` also runs clippy's lints, warnings as errors (CI sets it).
LINT ?= 0

DEMO_ROWS ?= 2000000
DEMO_FORMAT ?= csv
DEMO_WORKERS ?= 2

.PHONY: setup setup-gpu setup-gpu-runtime build release demo test test-fast check lint kube tools models clean

# ONNX Runtime 1.31.1 from its wheel: the binary loads
# .venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1.
# moto[server] serves S3 and SQS to the tests.
setup: $(STAMP)

$(STAMP): models/requirements-runtime.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r models/requirements-runtime.txt
	touch $@

# ONNX Runtime's GPU build in its own venv (.venv-gpu): the binary loads it
# instead of .venv's when asked for --device cuda or tensorrt. The runtime
# alone is what the tests need (on machines without a GPU they prove the
# GPU path's errors and its CPU fallback); `setup-gpu` adds CUDA 13 and
# cuDNN 9 (and TensorRT 10 with GPU_TENSORRT=1), which the binary preloads
# from the venv: no LD_LIBRARY_PATH. The NVIDIA driver (libcuda.so.1) comes
# with the node, never from a wheel. See docs/gpu.md.
setup-gpu-runtime: $(GPU_STAMP)

$(GPU_STAMP): models/requirements-gpu-runtime.txt
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r models/requirements-gpu-runtime.txt
	touch $@

setup-gpu: $(GPU_STAMP) $(GPU_LIBS_STAMP) $(if $(filter 1,$(GPU_TENSORRT)),$(GPU_TRT_STAMP))

$(GPU_LIBS_STAMP): models/requirements-gpu.txt $(GPU_STAMP)
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r models/requirements-gpu.txt
	touch $@

$(GPU_TRT_STAMP): models/requirements-tensorrt.txt $(GPU_LIBS_STAMP)
	$(GPU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r models/requirements-tensorrt.txt
	touch $@

build: setup
	$(CARGO) build --release --locked

# The release build and the venv install at once (one is CPU, the other
# mostly network), then the demo.
demo:
	@$(MAKE) --no-print-directory -j2 release setup
	./target/release/hourglass demo --rows $(DEMO_ROWS) --format $(DEMO_FORMAT) --workers $(DEMO_WORKERS)

release:
	$(CARGO) build --release --locked

# The S3/SQS tests talk to a moto server on loopback, the scaler's
# Kubernetes tests to etcd + kube-apiserver on loopback, both started for the
# run. kube-apiserver is built once from Debian's kubernetes source package
# (scripts/kube-build, ~6-10 min) and cached under ~/.cache/hourglass; it
# builds while cargo builds the tests (scripts/test). The chart, alert and
# metrics tests use helm, promtool and prometheus, installed once under
# ~/.cache/hourglass/tools by scripts/tools. LINT=1 (CI) lints the
# workspace with clippy in the same build (see scripts/test).
test: setup setup-gpu-runtime
	LINT=$(LINT) CARGO=$(CARGO) scripts/test

# The fast tier, for the edit-test loop: unit tests, the filesystem and
# local-queue halves of the shared suites, and the local end-to-end tests.
# No root, no API-server build, no server beyond the tests' own loopback
# ones; a few minutes on a warm 2-core machine. `make test` stays the full
# suite and is what CI runs.
FAST_TESTS := --test e2e --test cli --test registry --test serve --test exactly_once --test scaler_sim --test tty --test bench \
	--test train --test lease_mechanics --test gpu --test gpu_wheel --test queue_suite --test store_suite --test registry_suite --test golden --test plan_props --test kube_requests --test formats --test compat --test serve_hostile --test docs --test batching
test-fast: setup setup-gpu-runtime
	$(CARGO) test --workspace --locked --no-fail-fast --lib --bins $(FAST_TESTS) -- --skip sqs_ --skip s3_ --skip _on_s3

# Formatting and clippy with warnings as errors; CI runs it before `make test`.
check:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

lint: check

kube:
	scripts/kube-build >/dev/null

tools: setup
	scripts/tools >/dev/null

# Regenerates the reference models, cards and golden predictions (committed;
# tests never need this).
models: $(MODELS_STAMP)
	$(VENV)/bin/python models/make_models.py
	$(VENV)/bin/python models/make_unfit_models.py

$(MODELS_STAMP): models/requirements.txt $(STAMP)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r models/requirements.txt
	touch $@

clean:
	rm -rf target .hourglass
