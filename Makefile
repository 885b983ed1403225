# The README's two commands: `make demo` (whole loop on the embedded default) and `make test`.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: help setup demo test test-fast check-deploy lint format down status bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' Makefile | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create .venv from pyproject.toml + requirements/lock.txt (quick when already done)
	@bash scripts/setup.sh

demo: setup  ## set up if needed, start the local stack and run the whole loop on synthetic data
	$(BIN)/parking-ml demo

test: setup  ## set up if needed, then lint, format check and the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_deploy.py
	$(BIN)/pytest

test-fast: setup  ## unit tests only
	$(BIN)/pytest tests/unit

check-deploy: setup  ## offline checks of docker/, docker-compose.yml, charts/ (hadolint, compose, helm, checkov)
	$(BIN)/python scripts/check_deploy.py

lint: setup  ## ruff lint
	$(BIN)/ruff check .

format: setup  ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

down: setup  ## stop the local stack; leaves no process behind
	$(BIN)/parking-ml stack down

status: setup  ## show the local stack
	$(BIN)/parking-ml stack status

bench: setup  ## benchmarks (run by hand; print tables and ratios against a named peer)
	$(BIN)/python bench/synth.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/train.py

clean:  ## remove local state (var/) but keep .venv
	rm -rf var .pytest_cache .ruff_cache
