# Two commands matter: `make run` and `make test`. Both bootstrap the virtualenv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean install contract

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m citygrid.devstack run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy citygrid contract services gateway bench

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

contract: $(STAMP)
	$(PY) -m contract.publish

clean:
	rm -rf .data
