# The two Quickstart commands (`make run`, `make test`) and the install they share.
# Only Python 3.11+ is assumed; uv is bootstrapped into .venv and installs from uv.lock.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

# Tests run on both cores; the tests with real processes stay together on one worker.
PYTEST_PARALLEL ?= -n 2 --dist loadgroup

.PHONY: install run test test-fast lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) sync --locked --inexact --python $(VENV)/bin/python
	@touch $@

run: install
	$(VENV)/bin/agenthub serve

test: install
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The edit-run loop: everything but the tests that start real hub and Redis processes.
test-fast: install
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) -m "not multiprocess" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
