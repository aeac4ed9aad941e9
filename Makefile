# Quick start targets. Both create/refresh .venv from constraints.txt first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo serve test lint bench

$(BIN)/useg: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(BIN)/useg

setup: $(BIN)/useg

demo: setup
	$(BIN)/useg demo

serve: setup
	$(BIN)/useg demo --serve

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: setup lint
	bash scripts/ensure-postgres.sh
	$(BIN)/pytest --cov --cov-report=term:skip-covered
