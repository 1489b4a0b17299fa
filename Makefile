# One Makefile for people and CI. `make demo` runs the main job, `make test` the test suite;
# both create the virtual environment they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PHOTOS ?=
DB ?= data/crossmodal.db
SAMPLE ?= data/sample-photos
PORT ?=
MODEL ?= $(CROSSMODAL_MODEL)
# the sample folder is made for the model this repository ships; your photos get the default
# pretrained model (downloaded on first use) unless MODEL names another
SAMPLE_MODEL := $(if $(MODEL),$(MODEL),shapes-tiny)
MODEL_FLAG := $(if $(MODEL),--model $(MODEL),)
PORT_FLAG := $(if $(PORT),--port $(PORT),)

.PHONY: install browser demo test test-fast lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[demo,dev,ray]'
	touch $@

install: $(VENV)/.installed

## browser: Debian's Chromium for the browser tests (needs root or sudo; skipped tests without it)
browser:
	@.ci/install-browser || echo "could not install Chromium: browser tests will be skipped"

## demo: index PHOTOS (a generated sample folder when none is given) into DB and open the search demo
demo: install
ifeq ($(PHOTOS),)
	$(PY) -m crossmodal sample $(SAMPLE)
	$(PY) -m crossmodal index $(SAMPLE) --db $(DB) --model $(SAMPLE_MODEL)
	$(PY) -m crossmodal labels add $(SAMPLE)/labels.txt --db $(DB)
	$(PY) -m crossmodal labels add $(SAMPLE)/captions.txt --table captions --db $(DB)
else
	$(PY) -m crossmodal index "$(PHOTOS)" --db $(DB) $(MODEL_FLAG)
endif
	$(PY) -m crossmodal demo --db $(DB) $(PORT_FLAG)

## test: lint, type-check and run the whole test suite (what CI runs)
test: install browser
	$(VENV)/bin/ruff check crossmodal demo tests
	$(VENV)/bin/mypy
	$(PY) -m pytest

## test-fast: the suite without slow and browser tests
test-fast: install
	$(PY) -m pytest -m "not slow and not browser"

lint: install
	$(VENV)/bin/ruff check crossmodal demo tests
	$(VENV)/bin/ruff format --check crossmodal demo tests
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format crossmodal demo tests
	$(VENV)/bin/ruff check --fix crossmodal demo tests

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
