# finpipe: `make demo` runs the pipeline on the bundled data, `make test` runs the tests.
# Both create the virtualenv (.venv) on first use.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export FINPIPE_DATA_ROOT ?= $(CURDIR)/data
LINT_PATHS := $(wildcard finpipe finpipe_tests benchmarks)

.PHONY: demo test lint install test-binaries clean

install: $(VENV)/.installed

# torch first: a CUDA build where a GPU is present, else the CPU build (the CPU wheel index
# when it is reachable; pip's configured indexes otherwise), so no GPU machine pulls CUDA.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || { echo "creating virtualenv $(VENV)"; python3 -m venv $(VENV); }
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU found: installing torch==$(TORCH_VERSION) (CUDA build)"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	elif $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/', timeout=5)" 2>/dev/null; then \
	  echo "no GPU: installing torch==$(TORCH_VERSION) CPU build from $(TORCH_CPU_INDEX)"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" --extra-index-url $(TORCH_CPU_INDEX); \
	else \
	  echo "no GPU: installing torch==$(TORCH_VERSION) from the configured package index"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)"; \
	fi
	@echo "installing finpipe and its dependencies into $(VENV)"
	@$(PIP) install -q -e '.[dev]'
	@touch $@

$(DAGSTER_HOME)/dagster.yaml:
	@mkdir -p $(DAGSTER_HOME)
	@printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > $@

# Tests start a real PostgreSQL server and screenshot the report in headless Chromium;
# install Debian's packages for them when missing (as root, with apt-get).
TEST_PACKAGES := $(if $(wildcard /usr/lib/postgresql/*/bin/pg_ctl),,postgresql) \
	$(if $(shell command -v chromium-headless-shell chromium 2>/dev/null),,chromium-headless-shell)
test-binaries:
	@if [ -z "$(strip $(TEST_PACKAGES))" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages for the tests: $(strip $(TEST_PACKAGES))"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES) >/dev/null; \
	else echo "missing Debian packages for some tests: $(strip $(TEST_PACKAGES))"; fi

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m finpipe.defs.demo

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

test: install test-binaries lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .dagster_home data .pytest_cache
