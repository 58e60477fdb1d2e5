# lumbar-kb: `make demo` sets up and evaluates the bundled example patients; `make test` sets up and tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PATIENTS := $(sort $(wildcard knowledge/lumbar_mass/patients/*))

.PHONY: setup demo test lint check bench validate clean screenshots

KB ?=
KB_OPT := $(if $(KB),--kb $(KB))

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash .ci/ensure-graphviz
	bash .ci/ensure-chromium
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/lumbar-kb validate
	@for p in $(PATIENTS); do echo "=================== $$p"; $(BIN)/lumbar-kb evaluate "$$p" || exit $$?; done
	@mkdir -p out
	$(BIN)/lumbar-kb graph -o out/decision-graph.svg
	@for p in $(PATIENTS); do n=$$(basename "$${p%.*}"); $(BIN)/lumbar-kb graph --patient "$$p" -o "out/path-$$n.svg" || exit $$?; done
	@echo "diagrams: out/decision-graph.svg and out/path-*.svg"
	$(BIN)/lumbar-kb review -o out/review
	@echo "review pack for the medical board: open out/review/index.html in a browser"

test: setup
	$(BIN)/python -m pytest -q

# the code's gates: ruff (lint and format) and mypy (through .ci/typecheck, which maps the import names)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHON=$(BIN)/python bash .ci/typecheck

# an author's proof that an edit broke nothing: the gates, then load, prove, and run every scenario with full
# coverage; `make check KB=path/to/kb` does the same for a copy of the knowledge base
check: lint
	$(BIN)/lumbar-kb validate $(KB_OPT)
	$(BIN)/lumbar-kb check $(KB_OPT)
	$(BIN)/lumbar-kb test --require-coverage $(KB_OPT)

bench: setup
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_review.py

# the review pack's screenshots in docs/images/ (headless Debian chromium), after an edit to its pages
screenshots: setup
	$(BIN)/lumbar-kb review -o out/review
	$(BIN)/python docs/review_screenshots.py out/review docs/images

validate: setup
	$(BIN)/lumbar-kb validate $(KB_OPT)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
