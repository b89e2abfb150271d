# Set-up is part of every target: a fresh clone needs nothing but python3 (>= 3.10).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Apart from runs/synthetic-demo, where a plain `fcnseg train` writes: the demo replaces its own run.
RUN_DIR ?= runs/demo

.PHONY: demo test lint setup

$(BIN)/fcnseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/fcnseg

demo: setup
	$(BIN)/fcnseg train --recipe synthetic-demo --out $(RUN_DIR) --overwrite
	$(BIN)/fcnseg eval $(RUN_DIR)/best.pt --json $(RUN_DIR)/eval.json
	$(BIN)/fcnseg predict $(RUN_DIR)/best.pt --dataset synthetic --split val --limit 6 --out $(RUN_DIR)/predictions --overwrite

lint: setup
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs

test: lint
	$(BIN)/python -m pytest -q
