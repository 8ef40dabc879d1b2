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

.PHONY: repro no-walkthrough push pull test test-slow lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v >= (3, 11) else "$(PYTHON) is Python %d.%d, the pinned packages need 3.11+: run make with PYTHON=python3.11 (or newer)" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

repro: $(STAMP)
	$(BIN)/dvc repro

# The headline experiment: no walkthrough anywhere in training, constrained generation, a
# longer PPO run with its learning curve. Runs as a DVC experiment in the workspace, then
# snapshots its results into reports/no_walkthrough/ and README's second table.
# SFT imitates the best 5% (by final score) of 32 explorer episodes: the explorer chases
# novelty, so imitating them all teaches no route; value_coef 0.1 lets the critic learn the
# cellar's deaths; baseline state compares the commands typed in one game state with each
# other, where the critic's one value made every cellar command look bad (README, "Without
# the walkthrough").
NO_WALKTHROUGH := -S 'sft.sources=[random,explorer]' -S 'sft.imitate=[explorer]' \
	-S collect.episodes.explorer=32 -S sft.imitate_best=0.05 -S ppo.value_coef=0.1 \
	-S ppo.baseline=state \
	-S ppo.action_mode=constrained -S eval.action_mode=constrained \
	-S ppo.num_envs=8 -S ppo.iterations=20 -S ppo.curve.every=2 -S 'eval.agents=[random,explorer,sft,ppo]'

no-walkthrough: $(STAMP)
	$(BIN)/dvc exp run -n no-walkthrough $(NO_WALKTHROUGH)
	$(BIN)/python -m zorkppo.results_table --snapshot

# Share every pipeline output through the default DVC remote (README, "Sharing artifacts").
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
