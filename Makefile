# The commands a newcomer needs: `make run` and `make test` (see README).
SHELL := /bin/bash
.DEFAULT_GOAL := help

comma := ,
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,bench,nudenet
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
PYTEST_ARGS ?=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## create .venv with the package and its development tools

.PHONY: host-deps
host-deps: ## install the Debian packages the node needs (runc, iptables, nftables, debootstrap, conntrack)
	scripts/install-host-deps

.PHONY: binaries
binaries: ## build the control plane, the node, helm and BuildKit from Go modules (cached outside the repo)
	scripts/build-binaries

.PHONY: lint
lint: venv ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: format
format: venv ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test-unit
test-unit: venv ## unit tests only (no cluster)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: venv host-deps binaries lint ## the whole suite: lint, unit, integration and e2e against the devcluster
	PINSTER_BIN_DIR=$$(scripts/build-binaries | tail -n1) $(BIN)/pytest tests $(PYTEST_ARGS)

.PHONY: run
run: venv host-deps ## the embedded default: devcluster, image, chart, sample uploads until Ready (stays up)
	scripts/run

.PHONY: deploy
deploy: venv ## install onto the current kubeconfig context: REGISTRY=host/path [VALUES=file] (see scripts/deploy)
	scripts/deploy

.PHONY: stop
stop: ## undo `make run`: uninstall, devcluster down (PURGE=1 also deletes .state/run)
	scripts/stop

.PHONY: clean
clean: ## remove the virtualenv and caches in the repo (not the binary cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
