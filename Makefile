# modeleval — build, test bed and test entry points. `make test` is the one command CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
UV_VERSION  := 0.13.8
TOOLS_DIR   ?= $(or $(MODELEVAL_TOOLS_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/modeleval/tools)
BED_DIR     ?= $(or $(MODELEVAL_BED_DIR),/tmp/modeleval-bed)
export MODELEVAL_TOOLS_DIR := $(TOOLS_DIR)

.PHONY: help venv demo tools cluster-up cluster-down test test-unit test-integration test-e2e \
        lock crds docs images prepare smoke bench bench-control-plane kind-up kind-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

# setup.py and the tokenizer's source too: the editable install compiles it in place.
$(VENV)/.installed: pyproject.toml requirements.lock setup.py operator/modeleval/engine/_letor.c
	@echo "[venv] creating $(VENV) with uv $(UV_VERSION) (pip 23.2 cannot resolve these pins)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	@$(VENV)/bin/uv pip install -q --compile-bytecode --python $(VENV)/bin/python -r requirements.lock
	@$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -e .
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv from the lock

DEMO_ROWS ?= 20000
demo: venv ## the main job on this machine: generate data, train, evaluate, print metrics and the report's path
	@$(VENV)/bin/modeleval demo --rows $(DEMO_ROWS)

lock: ## re-resolve requirements.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra operator --extra gpu --extra dev --python-version 3.11 -o requirements.lock

crds: venv ## regenerate the CRDs (crds/ and the chart's copies) from the spec models
	$(VENV)/bin/python -m modeleval.api.crd > crds/modelevaluations.modeleval.dev.yaml
	$(VENV)/bin/python -m modeleval.api.crd evaluationschedules > crds/evaluationschedules.modeleval.dev.yaml
	cp crds/modelevaluations.modeleval.dev.yaml crds/evaluationschedules.modeleval.dev.yaml charts/modeleval/crds/

docs: venv ## regenerate the docs site's reference pages (docs/reference/) from the code
	$(VENV)/bin/python -m modeleval.api.docs write .

tools: ## build the test bed's Go tools into $(TOOLS_DIR) (cached by version)
	@hack/build-tools.sh

images: ## build the operator, Ray and pause images without Docker (buildah; cached by input hash)
	@hack/build-images.sh

prepare: ## tools and images side by side (what every bed target needs; seconds when cached)
	@hack/prepare.sh

cluster-up: venv prepare ## start the local test bed with its real node (writes $(BED_DIR)/bed.env)
	@PYTHONPATH=tests $(VENV)/bin/python -m testbed up --dir $(BED_DIR)

cluster-down: ## stop the local test bed and every process it started
	@PYTHONPATH=tests $(VENV)/bin/python -m testbed down --dir $(BED_DIR)

test: venv prepare ## everything: unit, integration and e2e tests on the local test bed
	@$(VENV)/bin/python -m pytest tests

test-unit: venv ## unit tests only (no services)
	@$(VENV)/bin/python -m pytest tests/unit

test-integration: venv prepare ## MinIO, FerretDB and local Ray tests
	@$(VENV)/bin/python -m pytest tests/integration

test-e2e: venv prepare ## the Kubernetes test bed tests
	@$(VENV)/bin/python -m pytest tests/e2e

smoke: venv prepare ## the newcomer's path: bed, chart, examples, one evaluation on the real node
	@BED_DIR=$(BED_DIR) VENV=$(VENV) hack/smoke.sh

ROWS ?= 240000
RUNS ?= 3
# profile_cost.py's rounds: its warm verdict (a Mann-Whitney U test) needs at least 4 each way;
# 7 rounds hold its medians steadier against the machine's minute-to-minute speed
PROFILE_RUNS ?= 7
# Evidently, for bench/data_drift.py only: a virtualenv of its own in the cache outside the
# checkout, keyed by its pins (hack/versions.env), with the lock's pyarrow to read the Parquet.
pin = $(shell sed -n 's/^$(1)=//p' hack/versions.env)
EVIDENTLY_VENV := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/modeleval/bench/evidently-$(call pin,EVIDENTLY_VERSION)-pandas-$(call pin,EVIDENTLY_PANDAS_VERSION)
$(EVIDENTLY_VENV)/.installed: hack/versions.env requirements.lock | $(VENV)/.installed
	@echo "[bench] installing Evidently $(call pin,EVIDENTLY_VERSION) into $(EVIDENTLY_VENV)"
	@$(VENV)/bin/uv venv -q --clear --python $(VENV)/bin/python $(EVIDENTLY_VENV)
	@$(VENV)/bin/uv pip install -q --python $(EVIDENTLY_VENV)/bin/python \
	  evidently==$(call pin,EVIDENTLY_VERSION) pandas==$(call pin,EVIDENTLY_PANDAS_VERSION) \
	  $$(grep '^pyarrow==' requirements.lock)
	@touch $@

bench: venv prepare $(EVIDENTLY_VENV)/.installed ## side-by-side engine benchmark (ROWS=240000 RUNS=3 PROFILE_RUNS=7), modeleval run vs a pandas script, the profile's cost, profile + drift vs Evidently
	@$(VENV)/bin/python bench/engine.py --rows $(ROWS) --runs $(RUNS)
	@$(VENV)/bin/python bench/inline.py --runs $(RUNS)
	@$(VENV)/bin/python bench/profile_cost.py --rows $(ROWS) --runs $(PROFILE_RUNS)
	@$(VENV)/bin/python bench/data_drift.py --runs $(RUNS) --evidently $(EVIDENTLY_VENV)/bin/python

COUNT ?= 100
bench-control-plane: venv prepare ## 100 evaluations at once on the test bed (COUNT=100)
	@$(VENV)/bin/python bench/control_plane.py --count $(COUNT)

kind-up: venv ## for users with Docker: a kind cluster, the chart and one example evaluation until it Succeeded
	@hack/kind-up.sh

kind-down: ## delete the kind cluster made by kind-up (and everything in it)
	@kind delete cluster --name $${KIND_CLUSTER:-modeleval}

clean: ## remove the venv (the tool cache outside the checkout is kept)
	rm -rf $(VENV) .pytest_cache
