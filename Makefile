# kubetune: the targets users, CI and checks rely on. Keep their names stable.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# On 2-core machines OpenMP's default spin-wait slows training 10-20x under load.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install test test-fast lint bench crds cluster-up cluster-down dev-up dev-down demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: the local CPU build (an unpinned torch would pull CUDA wheels).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	bash hack/install-tools.sh
	@touch $@

install: $(VENV)/.installed ## create .venv with torch (CPU) and the package with all extras

test: install ## the whole suite (cluster, slow and end-to-end tests included)
	bash hack/build-k8s.sh
	$(PY) -m pytest

test-fast: install ## the suite without the tests marked slow
	bash hack/build-k8s.sh
	$(PY) -m pytest -m "not slow"

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install ## benchmarks under tests/bench (ratios against a baseline run side by side)
	bash hack/build-k8s.sh
	bash hack/bench.sh

crds: install ## regenerate manifests/crds (and the chart's copy) from the typed models
	$(PY) -m kubetune_crd.generate

cluster-up: install ## start (or repair) the local cluster, its data kept; last line: export KUBECONFIG=...
	@bash hack/build-k8s.sh
	@bash hack/cluster-up.sh

cluster-down: ## stop the local cluster, leaving none of its processes (its data stays)
	@bash hack/cluster-down.sh

dev-up: install ## cluster + CRD + operator + API on 127.0.0.1:5002
	@bash hack/build-k8s.sh
	@bash hack/dev-up.sh

dev-down: ## stop what dev-up started (jobs, models and their files stay)
	@bash hack/dev-down.sh

clean: ## stop everything and DELETE the local cluster's data (jobs, trained models, volumes)
	@bash hack/clean.sh

demo: install ## the whole product on the local cluster: a fine-tune through the HTTP API
	@bash hack/build-k8s.sh
	@bash hack/demo.sh
