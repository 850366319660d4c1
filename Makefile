# housing-price-mlops — every workflow is a target here. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
CONSTRAINTS := $(wildcard requirements/constraints-py$(PY_VERSION).txt)

# Use the offline copy of the dataset when it sits beside the checkout, unless told otherwise.
SHARED_DATA := $(abspath ../shared/data/housing.csv)
ifeq ($(origin HOUSING_DATA_SOURCE),undefined)
ifneq ($(wildcard $(SHARED_DATA)),)
export HOUSING_DATA_SOURCE := $(SHARED_DATA)
endif
endif

# DVC stages call `python`: make it the project's.
export PATH := $(BIN):$(PATH)

PYTEST_ARGS ?=

PORT ?= 3000

.PHONY: help setup pipeline run serve build tools bench load test test-fast lint format typecheck check dvc-remote push pull clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## Create .venv with the project and its dev tools installed

# uv installs the pinned set in about a minute where pip takes over 2 minutes (most of it resolving); pip is the
# fallback when uv cannot reach the index. Bytecode is compiled at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set (as on CI machines) every process would otherwise compile each module it imports,
# which made the suite half again as slow. pip itself is kept current: MLflow records its version in every
# logged model's environment.
UV_PIN := $(if $(CONSTRAINTS),$(shell grep '^uv==' $(CONSTRAINTS)),uv)
# $(call install,<venv python>,<requirements>): uv when it can, pip otherwise.
install = $(BIN)/uv pip install --quiet --compile-bytecode --python $(1) $(2) \
	|| { echo "uv could not install: falling back to pip" >&2; $(1) -m pip install --quiet $(2); }

# The project's extras: the dev tools, and PySpark (housing score --engine spark, whose test runs it). A variable,
# since a comma inside $(call ...) would split its argument.
EXTRAS := dev,spark

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps '$(UV_PIN)'
	$(call install,$(BIN)/python,--upgrade pip $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(EXTRAS)]')
	touch $@

pipeline: setup ## Run the DVC pipeline (ingest ▸ validate ▸ feedback ▸ prepare ▸ train ▸ refit_effect ▸ evaluate ▸ refit ▸ register)
	@echo "data source: $${HOUSING_DATA_SOURCE:-params.yaml data.source}"
	dvc repro
	@# DVC cannot see the MLflow and BentoML stores: re-register if they lost the champion.
	python -m training.register --check || dvc repro --force --single-item register

run: setup pipeline serve ## Set everything up, run the pipeline and serve the fresh champion

serve: setup ## Serve the champion from the BentoML store on PORT (3000)
	bentoml serve service.service:HousePricer --host 0.0.0.0 --port $(PORT)

build: setup ## Build the bento (service + champion model + generated Dockerfile)
	bentoml build

# need-<target>: stop at once, in one line naming `make tools`, when a system tool <target> runs is missing
# (devtools/system_tools.py, standard library only: it runs before setup and the pipeline).
# (Not .PHONY: make would skip the pattern rule for a phony target. No file of the name is ever made.)
need-%:
	$(eval absent := $(shell $(PYTHON) -m devtools.system_tools $*))
	$(if $(absent),$(error $(absent)))

.PHONY: image
image: need-image pipeline build ## Build the image with `bentoml containerize` (docker, else podman): housing-price-service:<version> and :latest
	python -m scripts.image --bento housing-price-service:latest

# Debian/Ubuntu packages named after the command they provide (hadolint, actionlint, shellcheck come with `setup`).
SYSTEM_TOOLS := wrk prometheus docker-compose ffmpeg espeak-ng nginx podman runc mmdebstrap iptables haproxy
# Debian packages whose programs are not on PATH under the package's name: checked with dpkg
# (prometheus-alertmanager ships amtool, which checks monitoring/alertmanager.yml; default-jre-headless is the
# Java that `housing score --engine spark` runs Spark on; binutils ships strip, which scripts/base_image.sh runs).
SYSTEM_PACKAGES := postgresql prometheus-alertmanager default-jre-headless binutils
# Debian packages Chromium; Ubuntu's package is a snap stub, so there Playwright fetches its own build.
UBUNTU := $(shell grep -qs '^ID=ubuntu' /etc/os-release && echo yes)
tools: setup ## Install the system tools the tests and benchmarks use (wrk, Prometheus, Chromium, docker-compose, ffmpeg, espeak-ng, nginx, podman, PostgreSQL, Java)
	@missing=""; for tool in $(SYSTEM_TOOLS) $(if $(UBUNTU),,chromium); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	for package in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(if $(UBUNTU),command -v chromium >/dev/null || python -m playwright install --with-deps chromium)

bench: need-bench pipeline ## Benchmark against `mlflow models serve` and the booster, then the log stores: reports/benchmark.json, log_stores.json
	python -m load_tests.benchmark
	python -m load_tests.log_stores
	@# README.md and docs/summary.md quote the benchmark's figures.
	python -m scripts.figures

.PHONY: bench-score
bench-score: setup tools ## housing score on 1,000,000 rows (local, then a tenth on Spark) beside MLflow pyfunc's predict: reports/bench_score.json
	python -m load_tests.bench_score --spark
	python -m scripts.figures

SOAK_MINUTES ?= 30
.PHONY: soak
soak: setup tools ## Steady mixed traffic at half capacity for SOAK_MINUTES (30); fails if memory, open files or p99 grow: reports/soak/
	python -m load_tests.soak --minutes $(SOAK_MINUTES)

LOAD_USERS ?= 32
LOAD_TIME ?= 30s
load: pipeline ## Headless Locust run against a fresh server on the champion; fails past the thresholds in the locustfile
	python -m load_tests.run_load --users $(LOAD_USERS) --run-time $(LOAD_TIME)

.PHONY: shared-stores
shared-stores: need-shared-stores setup ## PostgreSQL + SeaweedFS S3 + mlflow server in var/shared-stores, the pipeline into them, the service on PORT
	python -m devtools.local_stores --port $(PORT)

.PHONY: demo demo-video figures
demo: pipeline ## Walk through the system on the real data: serve, predict, bad input, feedback, drift, metrics
	python -m scripts.demo

demo-video: need-demo-video pipeline ## Record the narrated 5-minute walkthrough as reports/demo/demo.mp4 (Chromium, espeak-ng, ffmpeg), checked
	python -m scripts.demo_video

figures: setup ## Regenerate the figures README.md and docs/summary.md quote, from the reports in reports/
	python -m scripts.figures

# checkov pins packages the project pins differently (packaging, networkx, boto3): it lives in its own venv,
# pinned per Python by requirements/checkov-py<X.Y>.txt. tests/delivery/test_k8s.py runs this target first.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_PINS := requirements/checkov-py$(PY_VERSION).txt
.PHONY: checkov
checkov: $(CHECKOV_VENV)/.installed ## checkov (Kubernetes policies) in its own venv, .venv/checkov

$(CHECKOV_VENV)/.installed: $(CHECKOV_PINS) $(VENV)/.installed
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(call install,$(CHECKOV_VENV)/bin/python,-c $(CHECKOV_PINS) checkov)
	touch $@

.PHONY: diagram retrain report serving-lock
serving-lock: setup ## Lock requirements/serving.in (+ the 3.12 constraints, - serving-excludes.txt) into requirements/serving.txt for the image
	python -m uv pip compile requirements/serving.in -c requirements/constraints-py3.12.txt \
		--excludes requirements/serving-excludes.txt --universal \
		--python-version 3.12 --no-annotate --custom-compile-command "make serving-lock" -o requirements/serving.txt

diagram: setup ## Render docs/architecture.mmd (the README's diagram) to docs/architecture.png and .svg
	python -m scripts.render_diagram

retrain: setup ## Retrain if drift or feedback accuracy demand it, promote only if better, reload the service
	housing retrain

report: setup ## Insights from the prediction log: reports/insights/report.md with figures, and report.json
	housing report

# One pytest-xdist worker per core; each module runs whole on one worker, the heaviest first (tests/conftest.py).
TEST_WORKERS ?= auto
test: setup tools ## Run the whole test suite with coverage (real pipeline, servers, system tools), one worker per core
	python -m pytest -n $(TEST_WORKERS) --dist loadscope \
		--cov --cov-report=term --cov-report=xml --durations=25 $(PYTEST_ARGS)

test-fast: setup ## Unit tests only: synthetic data, no pipeline, no server, no system tools (under a minute)
	python -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not integration" -q $(PYTEST_ARGS)

lint: setup ## ruff lint, ruff format check and mypy: the pre-commit hooks (`pre-commit install` runs them on commit)
	pre-commit run --all-files

format: setup ## Apply ruff fixes and formatting
	ruff check --fix .
	ruff format .

typecheck: setup ## mypy on housing/ (strict), training/, service/, operations/ and devtools/
	mypy

.PHONY: security
security: setup ## bandit (config in pyproject.toml) and pip-audit of the venv and of the image's pinned packages
	bandit -q -c pyproject.toml -r housing training service operations deploy
	pip-audit --strict --skip-editable
	pip-audit --strict --no-deps --disable-pip -r requirements/serving.txt

check: lint ## Lint and type-check (make lint runs mypy too)

DVC_REMOTE ?=
dvc-remote: setup ## Point the DVC remote at DVC_REMOTE (local to this checkout)
	@test -n "$(DVC_REMOTE)" || { echo "usage: make dvc-remote DVC_REMOTE=/path/to/storage"; exit 2; }
	dvc remote modify --local storage url "$(DVC_REMOTE)"

push: setup ## Push DVC-tracked data and models to the remote
	dvc push

pull: setup ## Pull DVC-tracked data and models from the remote
	dvc pull

clean: ## Remove caches and coverage files (keeps .venv, data, stores)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml htmlcov
