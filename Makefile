# lumbar-kb: `make demo` sets up and evaluates the bundled example patients; `make test` sets up and tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PATIENTS := $(sort $(wildcard knowledge/lumbar_mass/patients/*))

.PHONY: setup demo test lint check author-check bench validate docs clean architecture fuzz screenshots soak mutation

KB ?=
KB_OPT := $(if $(KB),--kb $(KB))

setup: $(VENV)/.installed node_modules/.installed

# the npm packages the tests use, at the versions package-lock.json pins, into node_modules/: the independent engines
# tests/test_cpg.py runs the exported FHIR CPG package in (cql-execution, cql-exec-fhir, fhirpath, the official R4
# JSON Schema) and axe-core, the accessibility rules tests/test_review_browser.py injects into every review page
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the CPG tests (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(VENV)/.installed: pyproject.toml
	bash .ci/ensure-graphviz
	bash .ci/ensure-chromium
	@echo "setting up $(VENV) (first time: about a minute and a half; pip's log in $(VENV)/setup.log)"
	@$(PYTHON) -m venv $(VENV)
	@( $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[test]' ) > $(VENV)/setup.log 2>&1 \
		|| { tail -n 40 $(VENV)/setup.log; echo "set-up failed: the whole log is $(VENV)/setup.log" >&2; exit 1; }
	@# this package compiled once, as pip compiles what it installs (an editable install stays source): where the
	@# environment sets PYTHONDONTWRITEBYTECODE every command compiled it anew (50 ms a command)
	@$(BIN)/python -m compileall -q -j 0 cli engine visualize cohort clinic >> $(VENV)/setup.log 2>&1
	@# and the tests as pytest rewrites their asserts (tests/__pycache__): otherwise each of `make test`'s workers
	@# rewrites every test module on a clone's first run (about 2 s a worker); a test that no longer imports is
	@# reported by `make test`, not here
	@env -u PYTHONDONTWRITEBYTECODE PYTHONHASHSEED=0 $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider \
		>> $(VENV)/setup.log 2>&1 || true
	@touch $@

demo: setup
	$(BIN)/lumbar-kb validate
	@for p in $(PATIENTS); do echo "=================== $$p"; $(BIN)/lumbar-kb evaluate "$$p" || exit $$?; done
	@mkdir -p out
	$(BIN)/lumbar-kb graph -o out/decision-graph.svg
	@for p in $(PATIENTS); do n=$$(basename "$${p%.*}"); $(BIN)/lumbar-kb graph --patient "$$p" -o "out/path-$$n.svg" || exit $$?; done
	@echo "diagrams: out/decision-graph.svg and out/path-*.svg"
	$(BIN)/lumbar-kb review -o out/review
	@echo "review pack for the medical board: open out/review/index.html in a browser"

# every test, on all cores (pytest-xdist) with one worker more than cores: a test that waits (a server or a browser
# starting, a killed Dask worker's retry) leaves its core to the extra one (measured on 2 cores: 224 s -> 217 s);
# PYTHONHASHSEED fixed so that every worker collects the same ids; Python may keep compiled modules (__pycache__,
# ignored by git) even where the environment says not to: without them each worker and each command the tests run
# compiled this package and the tests anew (about a second a worker)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
test: setup
	env -u PYTHONDONTWRITEBYTECODE PYTHONHASHSEED=0 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# the code's gates: ruff (lint and format) and mypy (through .ci/typecheck, which maps the import names)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHON=$(BIN)/python bash .ci/typecheck

# an author's proof that an edit broke nothing: the gates, then load, prove, and run every scenario with full
# coverage; `make check KB=path/to/kb` does the same for a copy of the knowledge base
check: lint author-check

# COHORT_PATIENTS=1000000 make bench for the issue's million (minutes on 2 cores)
COHORT_PATIENTS ?= 100000
# CPG_PATIENTS=10000 make bench: both independent engines on every one of the tests' 10,000 patients (~12 min)
CPG_PATIENTS ?= 1000
bench: setup
	$(BIN)/python benchmarks/bench_author.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_review.py
	$(BIN)/python benchmarks/bench_cohort.py --patients $(COHORT_PATIENTS)
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_hostile.py
	$(BIN)/python benchmarks/bench_cpg.py --patients $(CPG_PATIENTS)

# long fuzzing, outside `make test` (which runs a derandomized short version, tests/test_fuzz.py): atheris
# (coverage-guided, FUZZ_RUNS inputs) when it installs, and the hypothesis suite with FUZZ_EXAMPLES each
FUZZ_RUNS ?= 50000
FUZZ_EXAMPLES ?= 1000
fuzz: setup
	-$(BIN)/python -m pip install -q 'atheris>=2.3'
	@if $(BIN)/python -c 'import atheris' 2>/dev/null; then \
		mkdir -p build/fuzz-corpus && cd build && ../$(BIN)/python ../tests/fuzz_atheris.py -atheris_runs=$(FUZZ_RUNS) fuzz-corpus; \
	else echo "atheris did not install: the hypothesis run only"; fi
	LUMBAR_KB_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

# documents generated from the knowledge base (a test fails when they are stale)
docs: setup
	$(BIN)/lumbar-kb hazards > docs/hazard-log.md

# docs/architecture.md's picture and module table, drawn from the real imports (a test fails while they are stale)
architecture: setup
	$(BIN)/python docs/tools/architecture.py

# the review pack's screenshots in docs/images/ (headless Debian chromium), after an edit to its pages
screenshots: setup
	$(BIN)/lumbar-kb review -o out/review
	$(BIN)/python docs/review_screenshots.py out/review docs/images
	LUMBAR_KB_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/test_questionnaire_page.py

# the property and differential tests with many more examples (LUMBAR_KB_SOAK knowledge bases / patients each)
SOAK ?= 2000
soak: setup
	LUMBAR_KB_SOAK=$(SOAK) $(BIN)/python -m pytest -q tests/test_differential.py tests/test_safety_properties.py

# mutmut over the engine's core on a copy of the tree (build/mutation): killed / survived / equivalent and every
# survivor; the equivalents, each with its reason, are in tests/mutation-equivalent.txt. Long: not part of `make test`.
mutation: setup
	$(BIN)/python -m pip install -q -e '.[test,mutation]'
	$(BIN)/python .ci/mutation.py

# the author's loop, in seconds: load, prove and run every scenario of a knowledge base (no code gates)
# the Python venv only: an author's loop needs neither npm's packages (the CPG tests) nor anything else of `setup`
author-check: $(VENV)/.installed
	$(BIN)/lumbar-kb validate $(KB_OPT)
	$(BIN)/lumbar-kb check $(KB_OPT)
	$(BIN)/lumbar-kb test --require-coverage $(KB_OPT)

validate: $(VENV)/.installed
	$(BIN)/lumbar-kb validate $(KB_OPT)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis out node_modules lumbar-kb-service.sqlite3
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
