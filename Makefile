# The two commands of the README: `make up` and `make test`. Everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest

.PHONY: browser up up-cluster down status test test-unit test-integration test-e2e test-cluster bench schemas compose-check setup clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

up: $(STAMP)
	$(BIN)/pbseg stack up

up-cluster: $(STAMP)
	PBSEG_TOPOLOGY=cluster $(BIN)/pbseg stack up

down:
	@if [ -x $(BIN)/pbseg ]; then $(BIN)/pbseg stack down; fi

status: $(STAMP)
	$(BIN)/pbseg stack status

schemas: $(STAMP)
	$(BIN)/pbseg schemas write

compose-check:
	@command -v docker-compose >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; } || true
	@if command -v docker-compose >/dev/null; then docker-compose -f deploy/compose.yaml config -q && echo "deploy/compose.yaml: valid"; \
	 else echo "docker-compose not installed and cannot be installed (not root): apt-get install docker-compose"; exit 1; fi

# The Segments page tests drive Debian's chromium (Playwright's own driver, never `playwright install`).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; }; } || true
	@test -x $(CHROMIUM) || { echo "the Segments page tests need Debian's chromium at $(CHROMIUM): run as root (make test installs it) or: sudo apt-get install chromium"; exit 1; }

# The whole suite, in two passes. pytest's exit 5 (nothing collected) fails.
# 1. unit, contract, integration and end-to-end tiers on the single-node topology;
# 2. on the local cluster (3 KRaft brokers, Redis Cluster 3+3): the cluster tier (faults), the
#    end-to-end tier again and the crash proof (smaller there).
CLUSTER_PASS := tests/cluster tests/e2e tests/integration/test_processor_crash.py \
	--deselect tests/e2e/test_ui_triggers.py::test_edit_keeps_what_the_form_does_not_show
test: $(STAMP) compose-check browser
	$(PYTEST) tests --ignore=tests/cluster -p no:cacheprovider
	PBSEG_TOPOLOGY=cluster $(PYTEST) $(CLUSTER_PASS) -p no:cacheprovider

test-cluster: $(STAMP) browser
	PBSEG_TOPOLOGY=cluster $(PYTEST) $(CLUSTER_PASS)

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-integration: $(STAMP)
	$(PYTEST) tests/integration tests/contract

test-e2e: $(STAMP) browser
	$(PYTEST) tests/e2e

bench: $(STAMP)
	bash bench/run.sh

clean: down
	rm -rf .run $(VENV)
