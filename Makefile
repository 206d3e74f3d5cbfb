# thermowatch — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON3 ?= python3
# Debian 12's and Ubuntu 24.04's own python3 is "externally managed" (PEP 668):
# pip refuses to install into it. Then the package and its dependencies go into
# a virtual environment in the checkout, .venv, and every target runs from it
# (.venv/bin/thermowatch). Any other python3 (pyenv, an activated venv, a
# container's) is used as it is. The standard venv module rather than uv: it
# ships with Python, so a stock machine needs nothing from outside Debian.
EXTERNALLY_MANAGED := $(shell $(PYTHON3) -c 'import os, sys, sysconfig; print(sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' 2>/dev/null)
ifeq ($(EXTERNALLY_MANAGED),True)
VENV := .venv
PYTHON ?= $(VENV)/bin/python
BIN := $(VENV)/bin/
STAMPS := $(VENV)
else
VENV :=
PYTHON ?= $(PYTHON3)
BIN :=
STAMPS := build
endif
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: help deps deps-demo deps-test constraints pi-requirements demo demo-down test test-artemis test-cluster lint typecheck unit integration schemas bench-contract fuzz nab detection clean

help:
	@echo "make demo       run the full pipeline demo on a simulated fleet (installs what it needs: the package, Mosquitto, Java)"
	@echo "make demo-down  stop the local stack the demo left running"
	@echo "make test       lint (ruff, import floors), type check and every test tier (installs what the tests need)"
	@echo "make test-artemis  only the broker-crash chaos cases on the optional Artemis broker, one node and a 2-node cluster (make test runs them too)"
	@echo "make test-cluster  only the chaos test on the cluster profile: 3 Kafka + 3 search nodes (make test runs it too)"
	@echo "make deps-demo  install only what the demo needs; make deps (= deps-test) everything the tests need"
	@echo "make fuzz       1,000,000 hostile inputs through every parser of untrusted bytes (FUZZ_ARGS='--inputs N --seed S')"
	@echo "make detection  false alarms per device-week and time to detect faults on simulated equipment (DETECTION_ARGS='--weeks N ...')"
	@echo "With an externally managed python3 (Debian 12, Ubuntu 24.04) everything goes into .venv."
	@echo "CI=true make test: a test whose prerequisite is missing fails instead of skipping."

# What each command installs. The Python package at the tested versions pinned
# in constraints.txt: the demo only the stages' extras, the tests every extra
# and the dev tools. From Debian (as root), what is used for real:
# - demo: Mosquitto, gcc + mosquitto-dev and libmosquitto-dev (the broker plugin binding client ids
#   to users is built at `stack up`), a JDK 17 and Maven for Kafka and OpenSearch
#   (their jars come from Maven Central on the first `thermowatch stack up` and are cached);
# - test: also headless Chromium + ChromeDriver (the web view's browser test),
#   strace (the outbox's fsync-order test), openssl (the TLS test's PKI),
#   systemd-analyze (the edge unit's check) and debootstrap (the Pi installer's
#   test builds a Debian 12 root with it).
# Under CI=true a test whose tool is missing fails (testsupport/prerequisites.py).
DEBIAN_DEMO := /usr/sbin/mosquitto:mosquitto /usr/bin/mosquitto_pub:mosquitto-clients \
	/usr/include/mosquitto_plugin.h:mosquitto-dev /usr/include/mosquitto.h:libmosquitto-dev \
	/usr/bin/gcc:gcc \
	/usr/bin/java:openjdk-17-jdk-headless /usr/bin/javac:openjdk-17-jdk-headless /usr/bin/mvn:maven
DEBIAN_TEST := $(DEBIAN_DEMO) /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver \
	/usr/bin/strace:strace /usr/bin/openssl:openssl /usr/bin/systemd-analyze:systemd \
	/usr/sbin/debootstrap:debootstrap

# Installs the Debian packages of the tools in $(1) (path:package pairs) that are
# missing: neither at that path nor on PATH under that name (a path may be a
# header: mosquitto-dev's, to build the broker plugin).
define debian_install
	@missing=""; for pair in $(1); do path="$${pair%%:*}"; \
	  [ -e "$$path" ] || command -v "$${path##*/}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; missing=$$(printf '%s\n' $$missing | sort -u | xargs); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "==> installing from Debian: $$missing (apt-get)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "missing Debian packages: sudo apt-get install $$missing"; exit 1; fi; \
	fi
endef

# pip runs again only when pyproject.toml or constraints.txt changed (a stamp
# file per set; `make clean` removes them); its progress is shown.
PIP_INSTALL := $(PIP) install --disable-pip-version-check -c constraints.txt

$(STAMPS)/.deps-demo: pyproject.toml constraints.txt $(if $(VENV),$(VENV)/bin/python)
	@echo "==> installing the Python package (stages' extras) into $(or $(VENV),$(PYTHON3)) (about 20 s; longer on a slow link)"
	$(PIP_INSTALL) -e '.[edge,gateway,cloud]'
	@mkdir -p $(@D) && touch $@

$(STAMPS)/.deps-test: pyproject.toml constraints.txt $(if $(VENV),$(VENV)/bin/python)
	@echo "==> installing the Python package with the test tools into $(or $(VENV),$(PYTHON3)) (about 30 s; longer on a slow link)"
	$(PIP_INSTALL) -e '.[dev]'
	@mkdir -p $(@D) && touch $@ $(STAMPS)/.deps-demo

deps-demo: $(STAMPS)/.deps-demo
	$(call debian_install,$(DEBIAN_DEMO))

deps-test: $(STAMPS)/.deps-test
	$(call debian_install,$(DEBIAN_TEST))

deps: deps-test

ifneq ($(VENV),)
# The virtual environment (only for an externally managed python3): Debian
# ships venv's pip in python3-venv, which a minimal install lacks.
$(VENV)/bin/python:
	@echo "==> $(PYTHON3) is externally managed (PEP 668): creating the virtual environment $(VENV)"
	@$(PYTHON3) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then echo "==> installing from Debian: python3-venv"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q python3-venv && $(PYTHON3) -m venv $(VENV); \
	  else echo "missing Debian package: sudo apt-get install python3-venv"; exit 1; fi; }
endif

# Pin what is installed now (run after a green `make test` on newer versions).
constraints: $(STAMPS)/.deps-test
	$(PYTHON) .ci/freeze_constraints.py > constraints.txt

# The Pi installer's hashed wheel set (deploy/pi/requirements-edge.txt): the edge
# extra at the versions in constraints.txt, with the sha256 of every file PyPI has
# for each pinned version (aarch64, x86-64, pure Python), for Python 3.11 (Debian 12,
# Raspberry Pi OS bookworm). uv resolves for every platform at once (--universal),
# which pip-compile cannot. Run after `make constraints`.
UV_VERSION := 0.13.9
pi-requirements: $(STAMPS)/.deps-test
	$(PIP) install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	{ sed -n '1,/^$$/p' deploy/pi/requirements-edge.txt; \
	  $(PYTHON) -m uv pip compile pyproject.toml --extra edge -c constraints.txt \
	    --universal --python-version 3.11 --generate-hashes --quiet \
	    --custom-compile-command 'make pi-requirements'; } > deploy/pi/requirements-edge.txt.new
	mv deploy/pi/requirements-edge.txt.new deploy/pi/requirements-edge.txt

demo: deps-demo
	@echo "==> thermowatch demo (the first run downloads Kafka and OpenSearch: a few minutes)"
	$(BIN)thermowatch demo

demo-down: $(STAMPS)/.deps-demo
	$(BIN)thermowatch stack down

lint: $(STAMPS)/.deps-test
	$(BIN)ruff check .
	$(BIN)ruff format --check .
	$(BIN)lint-imports

typecheck: $(STAMPS)/.deps-test
	$(BIN)mypy

test: deps-test lint typecheck
	@echo "==> every test tier (several minutes on 2 cores; the summary lists each skip and its reason)"
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Only the chaos test on the stack's cluster profile (`make test` runs it too): 3 Kafka
# and 3 search nodes, 2 gateways, 2-3 processors; a broker, a search node and a processor
# killed under load (about 6 min on 2 cores, 6 GB of memory).
test-cluster: deps-test
	$(PYTHON) -m pytest -m cluster $(PYTEST_ARGS)

# Only the chaos case on the optional Artemis broker (`make test` runs it too): a private
# Artemis + Kafka + OpenSearch, 5,000 acknowledged readings queued, the broker killed (about 2.5 min).
test-artemis: deps-test
	$(PYTHON) -m pytest -m artemis $(PYTEST_ARGS)

unit: $(STAMPS)/.deps-test
	$(PYTHON) -m pytest -m "not integration and not hil and not chaos" $(PYTEST_ARGS)

integration: deps-test
	$(PYTHON) -m pytest -m "integration or hil or chaos" $(PYTEST_ARGS)

schemas: $(STAMPS)/.deps-test
	$(PYTHON) -m telemetry_contract.schema --write

bench-contract: $(STAMPS)/.deps-test
	taskset -c 0 $(PYTHON) benchmarks/contract/bench_decode.py --json benchmarks/contract/result.json

# Hostile-input fuzz run (issue 14): every parser of untrusted bytes, 1,000,000
# generated inputs by default; exits 1 and prints the input of any failure.
# A shorter run: make fuzz FUZZ_ARGS="--inputs 20000 --seed 2". See docs/benchmarks.md.
FUZZ_ARGS ?=
fuzz: $(STAMPS)/.deps-test
	$(PYTHON) -m benchmarks.fuzz.run --json benchmarks/fuzz/result.json $(FUZZ_ARGS)

# NAB detection-quality benchmark (issue 8): scores the agent's detector causally
# over the 58 NAB series in ../shared/data/nab; see docs/benchmarks.md.
nab: $(STAMPS)/.deps-test
	$(PYTHON) -m benchmarks.nab.run --detector context

# Detection on simulated equipment (issue 17): 4 normal device-weeks per equipment
# profile at 1 Hz from install, plus every fault injected into them; false alarms
# per device-week and time to detect. See docs/benchmarks.md. A quicker run:
# make detection DETECTION_ARGS="--weeks 1 --interval-s 10".
DETECTION_ARGS ?=
detection: $(STAMPS)/.deps-test
	$(PYTHON) -m benchmarks.detection.run --json benchmarks/detection/result.json $(DETECTION_ARGS)

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache $(VENV:%=%/.deps-*)
