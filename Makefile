# The two commands: `make demo` (the main job) and `make test` (ruff + pytest).
# Each is self-contained: it creates .venv and installs the package when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ppl-scenes demo

lint: $(STAMP)
	$(BIN)/ruff check ppl_scenes experiments tests

test: $(STAMP) lint
	$(BIN)/python -m pytest -n auto --dist worksteal --durations=25

clean:
	rm -rf $(VENV) build *.egg-info
