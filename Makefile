# aicn-testbed — every target installs what it needs first (venv, packages, generated stubs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(shell find protos -name '*.proto' | sort)
SCENARIO ?= scenarios/default.yaml
PARTITION ?= site
DOCKER_NETWORK ?= bridge
IMAGE  ?= aicn-testbed:latest
LOG_LEVEL ?= warning
K8S_VERSION := 1.32.0
STAMP  := $(VENV)/.installed-stamp
STUBS  := gen/.stubs-stamp

.DEFAULT_GOAL := help
.PHONY: help install run test test-integration bench lint clean engine image up status down e2e k8s-check

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

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

run: install ## run the default scenario (SCENARIO=... to pick another), print its summary, write its report (replaces out/NAME)
	$(BIN)/testbed run $(SCENARIO) --out out/$(basename $(notdir $(SCENARIO))) --force
	$(BIN)/testbed report out/$(basename $(notdir $(SCENARIO)))

test: install ## run every test: unit and integration (real processes on loopback)
	$(BIN)/pytest

bench: install ## print the kernel, window and wall-time figures
	$(BIN)/python -m orchestrator.bench

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy scripts/protect_on_ber.py

engine: ## make a Docker engine answer (installs and starts Debian's docker.io if there is none; needs root then)
	scripts/docker-engine.sh

image: install engine ## build the device host image (IMAGE=aicn-testbed:latest; its wheelhouse and base image too if missing)
	IMAGE=$(IMAGE) PYTHON=$(BIN)/python scripts/build-image.sh

up: image ## run SCENARIO in containers, one per host of PARTITION (site; device: one per device), on DOCKER_NETWORK (bridge or host) (replaces out/NAME-docker)
	$(BIN)/testbed --log-level $(LOG_LEVEL) run $(SCENARIO) --backend docker --partition $(PARTITION) \
		--docker-network $(DOCKER_NETWORK) --image $(IMAGE) --out out/$(basename $(notdir $(SCENARIO)))-docker --force

status: install ## list the testbed's containers with their state and health
	$(BIN)/testbed status

down: install ## remove the containers and networks of the scenarios this checkout ran in Docker (safe to run twice)
	$(BIN)/testbed down

e2e: image ## end-to-end tests on a real Docker engine (containers on host networking, loopback only)
	$(BIN)/pytest -m e2e tests/e2e

k8s-check: install ## render SCENARIO's Kubernetes manifests in every partition, build and validate them offline
	@command -v kubectl >/dev/null || { echo "error: k8s-check builds the manifests with kubectl; install it" >&2; exit 1; }
	for partition in single site device; do \
		dir=build/k8s/$$partition && \
		$(BIN)/testbed render k8s $(SCENARIO) --partition $$partition --out $$dir && \
		kubectl kustomize $$dir > $$dir.yaml && \
		kubectl kustomize $$dir/shared > $$dir-shared.yaml && \
		$(BIN)/kubernetes-validate --quiet --strict -k $(K8S_VERSION) $$dir.yaml $$dir-shared.yaml || exit 1; \
	done
	@echo "k8s manifests of $(SCENARIO) valid for Kubernetes $(K8S_VERSION) in every partition"

clean: ## remove the venv, generated stubs and outputs (safe to run twice)
	rm -rf $(VENV) gen out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
