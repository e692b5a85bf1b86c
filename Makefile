# Two commands matter: `make run` and `make test`. Both bootstrap the virtualenv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The environment is installed from these locks only, every file with its hash (docs/dependencies.md).
LOCKS      := requirements/bootstrap.txt requirements/dev.txt
PIP_LOCKED := $(PY) -m pip install --quiet --require-hashes --no-deps

.PHONY: run test lint bench bench-hotpath bench-webhooks clean install contract lock

# A change to pyproject.toml or a lock rebuilds the virtualenv from scratch, so it holds exactly the
# lock: pip first (pinned), then every dependency, then the project itself (editable, not hashable,
# hence --no-deps; it builds with the locked setuptools).
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv --clear $(VENV)
	$(PIP_LOCKED) -r requirements/bootstrap.txt
	$(PIP_LOCKED) -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m citygrid.devstack run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy citygrid contract services gateway bench

# Tests run in parallel workers (pytest-xdist), each with its own embedded PostgreSQL and NATS, so
# no two workers share a database or a stream. Against real servers (DATABASE_URL / NATS_URL) they
# would share both: one worker then, unless TEST_WORKERS says otherwise.
TEST_WORKERS ?= $(if $(or $(DATABASE_URL),$(NATS_URL)),0,auto)

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)
	$(PY) -m bench

# The hot path beside raw PostgreSQL and nginx (needs wrk and nginx: docs/performance.md).
bench-hotpath: $(STAMP)
	$(PY) -m bench.hotpath

# Webhook delivery end to end beside plain POSTs to the same receiver (docs/performance.md).
bench-webhooks: $(STAMP)
	$(PY) -m bench.webhooks

contract: $(STAMP)
	$(PY) -m contract.publish

clean:
	rm -rf .data

# Regenerate the locks from pyproject.toml with the locked uv, in a throwaway virtualenv. Pins already
# in a lock are kept; to move them: make lock LOCK_ARGS=--upgrade (everything) or
# LOCK_ARGS='--upgrade-package fastapi' (one package). The runtime lock is constrained by the dev lock,
# so the image and the dev environment never disagree on a version.
LOCK_ARGS ?=
UV_COMPILE = "$$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES = $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

lock:
	tools=$$(mktemp -d) && trap 'rm -rf "$$tools"' EXIT && \
	$(PYTHON) -m venv "$$tools" && \
	"$$tools/bin/python" -m pip install --quiet --require-hashes --no-deps -r requirements/tools.txt && \
	echo uv | $(UV_COMPILE) - -o requirements/tools.txt && \
	{ echo pip; $(BUILD_REQUIRES); } | $(UV_COMPILE) - -o requirements/bootstrap.txt && \
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements/dev.txt && \
	$(UV_COMPILE) pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt
