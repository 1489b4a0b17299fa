# One Makefile for people and CI. `make demo` runs the main job, `make test` the test suite;
# both create the virtual environment they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PHOTOS ?=
DB ?= data/crossmodal.db
SAMPLE := data/sample-photos
MODEL ?= $(CROSSMODAL_MODEL)
MODEL_FLAG := $(if $(MODEL),--model $(MODEL),)

.PHONY: install browser demo test test-fast lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[demo,dev]'
	touch $@

install: $(VENV)/.installed

## browser: Debian's Chromium for the browser tests (needs root or sudo; skipped tests without it)
browser:
	@.ci/install-browser || echo "could not install Chromium: browser tests will be skipped"

## demo: index PHOTOS (a generated sample folder when none is given) into DB and open the search demo
demo: install
ifeq ($(PHOTOS),)
	$(PY) -m crossmodal sample $(SAMPLE)
	$(PY) -m crossmodal index $(SAMPLE) --db $(DB) $(MODEL_FLAG)
else
	$(PY) -m crossmodal index "$(PHOTOS)" --db $(DB) $(MODEL_FLAG)
endif
	$(PY) -m crossmodal demo --db $(DB)

## test: lint, type-check and run the whole test suite (what CI runs)
test: install browser
	$(VENV)/bin/ruff check crossmodal tests
	$(VENV)/bin/mypy
	$(PY) -m pytest

## test-fast: the suite without slow and browser tests
test-fast: install
	$(PY) -m pytest -m "not slow and not browser"

lint: install
	$(VENV)/bin/ruff check crossmodal tests
	$(VENV)/bin/ruff format --check crossmodal tests
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format crossmodal tests
	$(VENV)/bin/ruff check --fix crossmodal tests

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
