# flowsd developer entry points. A fresh clone needs only `make test` and `make run`:
# the first target that needs Python builds .venv from pyproject.toml.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/flowsd-demo.toml
# host:port of the demo's /metrics; auto: 127.0.0.1:9469 or the next free port.
MANAGEMENT ?= auto
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

.PHONY: install
install: $(STAMP) ## Build .venv with flowsd and its dev tools (idempotent)

.PHONY: test
test: $(STAMP) ## Run the whole test suite (starts its own PostgreSQL unless FLOWSD_TEST_DATABASE_URL is set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The machine's own PostgreSQL, as `make test-all` looks for it (trust or ~/.pgpass auth).
MACHINE_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: test-all
test-all: $(STAMP) ## make test on the embedded PostgreSQL 18, then its database tests on MACHINE_DATABASE_URL if it answers (CI)
	$(MAKE) --no-print-directory test
	@if $(BIN)/python -c 'import asyncio, asyncpg, sys; asyncio.run(asyncpg.connect(sys.argv[1], timeout=5))' '$(MACHINE_DATABASE_URL)' 2>/dev/null; then \
		echo "== make test again on $(MACHINE_DATABASE_URL) =="; \
		FLOWSD_TEST_DATABASE_URL='$(MACHINE_DATABASE_URL)' FLOWSD_TEST_DATABASE_ONLY=1 $(MAKE) --no-print-directory test; \
	else \
		echo "== no PostgreSQL answers at $(MACHINE_DATABASE_URL): tested on the embedded server only =="; \
	fi

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check flowsd tests bench
	$(BIN)/ruff format --check flowsd tests bench
	$(BIN)/mypy

.PHONY: fmt
fmt: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix flowsd tests bench
	$(BIN)/ruff format flowsd tests bench

PROTO_DIR := flowsd/mediator/proto

.PHONY: proto
proto: $(STAMP) ## Regenerate flowsd/mediator/proto/mediator_pb2.py(i) from mediator.proto
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO_DIR) --python_out=$(PROTO_DIR) \
		--pyi_out=$(PROTO_DIR) $(PROTO_DIR)/mediator.proto

.PHONY: run
run: $(STAMP) ## Run flowsd on its embedded defaults: local PostgreSQL (unless FLOWSD_DATABASE_URL) + simulated fleet; MANAGEMENT=host:port
	$(BIN)/flowsd demo --config $(CONFIG) --management $(MANAGEMENT)

.PHONY: status
status: $(STAMP) ## Fleet, daemon and projector state of what `make run` runs (same CONFIG)
	$(BIN)/flowsd status --config $(CONFIG)

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks; JSON in bench/results/, a table on stdout
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove the venv, caches and local state
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .state
