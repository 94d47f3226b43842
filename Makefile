# aicn-testbed — every target installs what it needs first (venv, packages, generated stubs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto' | sort)
SCENARIO ?= scenarios/default.yaml
STAMP  := $(VENV)/.installed-stamp
STUBS  := gen/.stubs-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-integration bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP) $(STUBS) ## create the venv, install pinned packages, generate gRPC stubs (idempotent)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	echo "$(CURDIR)/gen" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/aicn_testbed_stubs.pth"
	touch $@

$(STUBS): $(PROTOS) $(STAMP)
	rm -rf gen && mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $@

run: install ## run the default scenario (SCENARIO=... to pick another), print its summary, write its report
	$(BIN)/testbed run $(SCENARIO) --out out/$(basename $(notdir $(SCENARIO)))
	$(BIN)/testbed report out/$(basename $(notdir $(SCENARIO)))

test: install ## run every test: unit and integration (real processes on loopback)
	$(BIN)/pytest

bench: install ## print the kernel, window and wall-time figures
	$(BIN)/python -m orchestrator.bench

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

clean: ## remove the venv, generated stubs and outputs (safe to run twice)
	rm -rf $(VENV) gen out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
