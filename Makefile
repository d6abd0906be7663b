# Hourglass: the two commands a user needs are `make demo` and `make test`.
# Both install what they need (a project-local Python venv holding the ONNX
# Runtime shared library) and are safe to run again.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.hourglass-runtime
MODELS_STAMP := $(VENV)/.hourglass-models
CARGO ?= cargo

DEMO_ROWS ?= 2000000
DEMO_FORMAT ?= csv
DEMO_WORKERS ?= 2

.PHONY: setup build demo test test-fast check lint kube tools models clean

# ONNX Runtime 1.31.1 from its wheel: the binary loads
# .venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1.
# moto[server] serves S3 and SQS to the tests.
setup: $(STAMP)

$(STAMP): models/requirements-runtime.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r models/requirements-runtime.txt
	touch $@

build: setup
	$(CARGO) build --release --locked

demo: build
	./target/release/hourglass demo --rows $(DEMO_ROWS) --format $(DEMO_FORMAT) --workers $(DEMO_WORKERS)

# The S3/SQS tests talk to a moto server on loopback, the scaler's
# Kubernetes tests to etcd + kube-apiserver on loopback, both started for the
# run. kube-apiserver is built once from Debian's kubernetes source package
# (scripts/kube-build, ~6-10 min) and cached under ~/.cache/hourglass.
# The chart, alert and metrics tests use helm, promtool and prometheus,
# installed once under ~/.cache/hourglass/tools by scripts/tools.
test: setup kube tools
	HOURGLASS_TOOLS=$$(scripts/tools) scripts/with-moto scripts/with-kube $(CARGO) test --workspace --locked --no-fail-fast

# The fast tier, for the edit-test loop: unit tests, the filesystem and
# local-queue halves of the shared suites, and the local end-to-end tests.
# No root, no API-server build, no server beyond the tests' own loopback
# ones; a few minutes on a warm 2-core machine. `make test` stays the full
# suite and is what CI runs.
FAST_TESTS := --test e2e --test cli --test registry --test serve --test exactly_once --test scaler_sim --test tty --test bench \
	--test train --test lease_mechanics --test queue_suite --test store_suite --test registry_suite --test golden --test plan_props --test kube_requests
test-fast: setup
	$(CARGO) test --workspace --locked --no-fail-fast --lib --bins $(FAST_TESTS) -- --skip sqs_ --skip s3_

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
