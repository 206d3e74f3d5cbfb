# thermowatch — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON3 ?= python3
# Debian 12's and Ubuntu 24.04's own python3 is "externally managed" (PEP 668):
# pip refuses to install into it. Then the package and its dependencies go into
# a virtual environment in the checkout, .venv, and every target runs from it
# (.venv/bin/thermowatch). Any other python3 (pyenv, a venv, a container's) is
# used as it is.
EXTERNALLY_MANAGED := $(shell $(PYTHON3) -c 'import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' 2>/dev/null)
ifeq ($(EXTERNALLY_MANAGED),True)
VENV := .venv
PYTHON ?= $(VENV)/bin/python
BIN := $(VENV)/bin/
else
VENV :=
PYTHON ?= $(PYTHON3)
BIN :=
endif
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: help deps constraints pi-requirements demo demo-down test lint typecheck unit integration schemas bench-contract fuzz nab clean

help:
	@echo "make demo       run the full pipeline demo on a simulated fleet (installs what is missing)"
	@echo "make demo-down  stop the local stack the demo left running"
	@echo "make test       lint (ruff, import floors), type check and every test tier (installs what is missing)"
	@echo "make fuzz       1,000,000 hostile inputs through every parser of untrusted bytes (FUZZ_ARGS='--inputs N --seed S')"

# Installs the Python package with every extra (at the tested versions pinned
# in constraints.txt), and from Debian (as root) what the tests drive for real:
# Mosquitto, headless Chromium + ChromeDriver (the web view's browser test) and
# strace (the edge outbox's fsync-order test). Kafka and OpenSearch jars come
# from Maven Central on first `thermowatch stack up` (the test fixtures call
# it) and are cached.
DEBIAN_TOOLS := /usr/sbin/mosquitto:mosquitto /usr/bin/mosquitto_pub:mosquitto-clients \
	/usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/bin/strace:strace

deps: $(if $(VENV),$(VENV)/bin/python)
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]' -c constraints.txt
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  [ -x "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing from Debian:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages: sudo apt-get install$$missing"; exit 1; fi; \
	fi

ifneq ($(VENV),)
# The virtual environment (only for an externally managed python3): Debian
# ships venv's pip in python3-venv, which a minimal install lacks.
$(VENV)/bin/python:
	@echo "$(PYTHON3) is externally managed (PEP 668): installing into $(VENV)"
	@$(PYTHON3) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq python3-venv >/dev/null && $(PYTHON3) -m venv $(VENV); \
	  else echo "missing Debian package: sudo apt-get install python3-venv"; exit 1; fi; }
endif

# Pin what is installed now (run after a green `make test` on newer versions).
constraints:
	$(PYTHON) .ci/freeze_constraints.py > constraints.txt

# The Pi installer's hashed wheel set (deploy/pi/requirements-edge.txt): the edge
# extra at the versions in constraints.txt, with the sha256 of every file PyPI has
# for each pinned version (aarch64, x86-64, pure Python), for Python 3.11 (Debian 12,
# Raspberry Pi OS bookworm). uv resolves for every platform at once (--universal),
# which pip-compile cannot. Run after `make constraints`.
UV_VERSION := 0.13.9
pi-requirements: $(if $(VENV),$(VENV)/bin/python)
	$(PIP) install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	{ sed -n '1,/^$$/p' deploy/pi/requirements-edge.txt; \
	  $(PYTHON) -m uv pip compile pyproject.toml --extra edge -c constraints.txt \
	    --universal --python-version 3.11 --generate-hashes --quiet \
	    --custom-compile-command 'make pi-requirements'; } > deploy/pi/requirements-edge.txt.new
	mv deploy/pi/requirements-edge.txt.new deploy/pi/requirements-edge.txt

demo: deps
	$(BIN)thermowatch demo

demo-down:
	$(BIN)thermowatch stack down

lint:
	$(BIN)ruff check .
	$(BIN)ruff format --check .
	$(BIN)lint-imports

typecheck:
	$(BIN)mypy

test: deps lint typecheck
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit:
	$(PYTHON) -m pytest -m "not integration and not hil and not chaos" $(PYTEST_ARGS)

integration:
	$(PYTHON) -m pytest -m "integration or hil or chaos" $(PYTEST_ARGS)

schemas:
	$(PYTHON) -m telemetry_contract.schema --write

bench-contract:
	taskset -c 0 $(PYTHON) benchmarks/contract/bench_decode.py --json benchmarks/contract/result.json

# Hostile-input fuzz run (issue 14): every parser of untrusted bytes, 1,000,000
# generated inputs by default; exits 1 and prints the input of any failure.
# A shorter run: make fuzz FUZZ_ARGS="--inputs 20000 --seed 2". See docs/benchmarks.md.
FUZZ_ARGS ?=
fuzz:
	$(PYTHON) -m benchmarks.fuzz.run --json benchmarks/fuzz/result.json $(FUZZ_ARGS)

# NAB detection-quality benchmark (issue 8): scores the agent's detector causally
# over the 58 NAB series in ../shared/data/nab; see docs/benchmarks.md.
nab:
	$(PYTHON) -m benchmarks.nab.run --detector context

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
