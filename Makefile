# One entry point per job; each installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
IMAGE_ROOT ?= var/images
GATEWAY_PORT ?= 8080
DECODER_PORT ?= 50051

.PHONY: install samples run test lint format proto bench images clean

$(STAMP): pyproject.toml scripts/ensure_system_deps.sh decoder/native/jpeg_mosaic.c decoder/native/build.py decoder/native/build_openjpeg.py
	scripts/ensure_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[gateway,decoder,dev]'
	$(PY) -m decoder.native.build
	$(PY) -m decoder.native.build_openjpeg
	touch $@

install: $(STAMP)

samples: $(STAMP)
	$(PY) scripts/make_samples.py $(IMAGE_ROOT)

run: samples
	IMAGE_ROOT=$(IMAGE_ROOT) GATEWAY_PORT=$(GATEWAY_PORT) DECODER_PORT=$(DECODER_PORT) \
		PY=$(PY) scripts/run_stack.sh

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The generated stubs are committed; a test fails when they drift from the .proto.
proto: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH scripts/gen_proto.sh

# Side by side against IIPImage and the codec floor (~20 min on 2 cores); apt-gets
# iipimage-server, lighttpd and wrk when missing; rewrites docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m bench --install

# Container images: built where docker or podman runs, a clear skip elsewhere.
images:
	docker/build-images.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .hypothesis
