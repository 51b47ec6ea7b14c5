# Jisr: two commands do all the set-up.  `make run` then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export JISR_HOME ?= $(CURDIR)/var
export DAGSTER_HOME ?= $(JISR_HOME)/dagster
export DBT_SEND_ANONYMOUS_USAGE_STATS := False

UV := $(shell command -v uv 2>/dev/null || echo $(PYTHON) -m uv)
VENV := .venv
SYNCED := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)
BENEFICIARIES ?= 5000

.PHONY: setup run test test-slow dev docs clean help

help:
	@echo "make setup  install the pinned environment (.venv, from uv.lock)"
	@echo "make run    set up, generate sample deliveries into an empty landing area, run the refresh job through Dagster"
	@echo "make test   set up and run the test suite"
	@echo "make test-slow  slow tests: kills during refresh and publish, CI coverage over many seeds, benchmark smoke run"
	@echo "make dev    open the Dagster UI on this project (http://127.0.0.1:3000)"
	@echo "make docs   regenerate docs/data-contracts.md"
	@echo "make clean  remove everything under $(JISR_HOME) (landing area, stores, warehouses, reports)"
	@echo "make test-postgres  PostgreSQL serving target and Dagster storage (installs a throwaway server)"
	@echo "make test-spark     the warehouse on Spark, equal to DuckDB (needs Java 17)"
	@echo "make test-gates     kills during refresh and publish, concurrent readers and refreshes"
	@echo "make test-dagster-postgres  Dagster on PostgreSQL storage (deploy/dagster.yaml), throwaway server"
	@echo "make bench  benchmark at 100k and 1M beneficiaries; writes BENCHMARKS.md"

$(SYNCED):
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@rm -f $(VENV)/.synced-* && touch $@

setup: $(SYNCED)

run: setup
	@if [ -z "$$(ls -A "$(JISR_HOME)/landing" 2>/dev/null)" ]; then \
		JISR_DEMO=1 $(VENV)/bin/jisr generate --beneficiaries $(BENEFICIARIES); fi
	JISR_DEMO=1 $(VENV)/bin/jisr refresh

test: setup
	$(VENV)/bin/pytest

test-slow: setup
	$(VENV)/bin/pytest -m slow

dev: setup
	@mkdir -p "$(DAGSTER_HOME)" && [ -f "$(DAGSTER_HOME)/dagster.yaml" ] || cp orchestration/dagster.yaml "$(DAGSTER_HOME)/"
	JISR_DEMO=1 $(VENV)/bin/dagster dev -w workspace.yaml

docs: setup
	$(VENV)/bin/jisr contracts docs

clean:
	rm -rf "$(JISR_HOME)"

# PostgreSQL serving target and the evaluator role, on a throwaway cluster on loopback
# (installs Debian's postgresql when missing; the cluster is stopped and removed at the end).
.PHONY: test-postgres
test-postgres: setup
	scripts/postgres-ci.sh $(VENV)/bin/pytest -m postgres -p no:cacheprovider

# The warehouse on Apache Spark (dbt-spark local session, Java 17) built from the Parquet
# lake, with its dbt tests and the DuckDB/Spark equivalence test (environment .venv-spark).
.PHONY: test-spark
test-spark: setup
	UV="$(UV)" scripts/spark-ci.sh

# Dagster in production shape: deploy/dagster.yaml (PostgreSQL run, event-log and schedule
# storage, queued runs) on a throwaway PostgreSQL cluster; a small refresh is read back.
.PHONY: test-dagster-postgres
test-dagster-postgres: setup
	scripts/postgres-ci.sh $(VENV)/bin/pytest -m postgres tests/test_dagster_postgres.py -p no:cacheprovider

# Quality gates against the real refresh (dbt included): SIGKILL during the dbt build and
# during publish, a reader holding the serving file through a refresh, two refreshes at once.
.PHONY: test-gates
test-gates: setup
	$(VENV)/bin/pytest -m slow tests/test_gates.py -p no:cacheprovider

# Performance at national scale: 100,000 and 1,000,000 beneficiaries through the
# real refresh, floors, incremental refresh, bare dbt build; writes BENCHMARKS.md. About 5
# minutes on 2 cores. The quick smoke run (tiny scale, no file written) is in `make test-slow`.
BENCH_SCALES ?= 100000,1000000
BENCH_MONTHS ?= 12
.PHONY: bench
bench: setup
	$(VENV)/bin/jisr bench --scales $(BENCH_SCALES) --months $(BENCH_MONTHS)
