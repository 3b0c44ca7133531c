# The two commands: `make demo` (the main job) and `make test` (ruff, the docs build, BENCHMARKS.md
# against its records, pytest).
# `make docs` builds the API reference and the guides into docs/_build/html (warnings are errors).
# `make notebooks` re-executes notebooks/*.ipynb in place, outputs included (minutes: on the pretrained models).
# Each is self-contained: it creates .venv and installs the package when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs report-check notebooks install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ppl-scenes demo

lint: $(STAMP)
	$(BIN)/ruff check ppl_scenes experiments tests docs

# Installs the docs extra when an older .venv lacks it (the dev extra includes it).
docs: $(STAMP)
	$(BIN)/python -c "import sphinx, myst_parser" 2>/dev/null || $(BIN)/pip install -q -e '.[docs]'
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# BENCHMARKS.md is generated from the JSON records under benchmarks/ (python experiments/report.py);
# this fails, with a diff, when the committed page differs from what the records give. Seconds, no torch.
report-check: $(STAMP)
	$(BIN)/python experiments/report.py --check

# Runs each notebook top to bottom in a fresh kernel and writes it back with its outputs (nbclient,
# from the dev extra), as committed. Not in smoke mode: unset CI. PPL_SCENES_TRAIN_FROM_SCRATCH=1
# would train every model from scratch instead (hours). NOTEBOOKS= names a subset.
NOTEBOOKS ?= $(wildcard notebooks/*.ipynb)
notebooks: $(STAMP)
	env -u CI MPLBACKEND=Agg $(BIN)/python experiments/run_notebooks.py $(NOTEBOOKS)

test: $(STAMP) lint docs report-check
	$(BIN)/python -m pytest -n auto --dist worksteal --durations=25

clean:
	rm -rf $(VENV) build *.egg-info docs/_build
