# make run  - set up .venv on first use, run the default pipeline, build the HTML report
#             (make run CONFIG=my.yaml: check my.yaml merged over config.yaml with
#             python -m nondet check-config, which names file and line of a YAML error, then run with
#             --configfile my.yaml; budget and report take CONFIG too)
# make budget - mitigation versus training budget (snakemake mitigation_budget; not part of run)
# make test-fast - the tests that start no subprocess (no Snakemake, no scripts): about a minute;
#             run it after every change, and make test before you push
# make test - set up .venv (and Debian's SLURM, chromium and Fashion-MNIST, if missing) on first use, run
#             lint and format checks, then both tiers on TEST_WORKERS (2) pytest-xdist workers, longest
#             first (make test TEST_WORKERS=auto: one per core)
# make test-durations - run both tiers and store each test's seconds in tests/durations.json (the order
#             make test hands tests to the workers; refresh it after adding or reshaping slow tests)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE_ARGS ?=
CONFIG ?=
CONFIG_ARGS := $(if $(strip $(CONFIG)),--configfile $(CONFIG))

.PHONY: run budget report test test-fast test-durations lint format clean slurm chromium datasets

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(VENV)/.installed
ifneq ($(strip $(CONFIG)),)
	$(BIN)/python -m nondet check-config config.yaml $(CONFIG)
endif
	$(BIN)/snakemake $(CONFIG_ARGS) --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake $(CONFIG_ARGS) --report results/report.html $(SNAKEMAKE_ARGS)
	@echo "Table: results/tables/diversity.md  Figures: results/figures/  Report: results/report.html"

budget: $(VENV)/.installed
ifneq ($(strip $(CONFIG)),)
	$(BIN)/python -m nondet check-config config.yaml $(CONFIG)
endif
	$(BIN)/snakemake $(CONFIG_ARGS) --cores $(CORES) $(SNAKEMAKE_ARGS) mitigation_budget
	@echo "Table: results/tables/mitigation_budget.md  Figure: results/figures/mitigation_budget.png"

report: $(VENV)/.installed
	$(BIN)/snakemake $(CONFIG_ARGS) --report results/report.html $(SNAKEMAKE_ARGS)

# both tiers in one session on two pytest-xdist workers: the second fills the cores while a test's
# Snakemake run parses, reports or runs a lone job (docs/contributing.md). tests/conftest.py hands a
# file with a shared run to one worker whole, hands the units out longest first by
# tests/durations.json, so the fast tier's small tests come last and fill the cores while the last
# long run ends, and gives each worker's torch one thread
TEST_WORKERS ?= 2

test: $(VENV)/.installed slurm chromium datasets lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

test-durations: $(VENV)/.installed slurm chromium datasets
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --store-durations tests

test-fast: $(VENV)/.installed  # tests/conftest.py fails any test here that starts a subprocess
	$(BIN)/python -m pytest -q -m "not slow" tests

slurm:  # for tests/test_slurm.py; does nothing when SLURM is already installed
	scripts/install-slurm.sh

chromium:  # for tests/test_report_browser.py; does nothing when chromium is already installed
	scripts/install-chromium.sh

datasets:  # Fashion-MNIST for examples/ and its tests; does nothing when already installed
	scripts/install-datasets.sh

lint: $(VENV)/.installed
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/snakefmt Snakefile rules/
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf results logs .snakemake
