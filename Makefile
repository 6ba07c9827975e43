# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test check install install-test

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .

install-test: $(VENV)/bin/activate
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	./scripts/install-browser
	./scripts/install-mongosh
	./scripts/install-nginx

## Install everything and run the whole product on http://127.0.0.1:5001
run: install
	$(PY) app.py

## Install the test dependencies, check the layers and the lint, and run the whole test suite
test: install-test check
	$(PY) -m pytest $(PYTEST_ARGS)

## The import contract (pyproject.toml: one-way layers, no cycles, no Flask in jobflow.ops) and ruff
check:
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
