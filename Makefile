# zdse — a thin, self-documenting layer over the commands CI runs.
# `make help` lists the targets.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install debs sim test soak lint typecheck run screenshots bench-vsphere bench-notifications clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP) sim ## Create .venv with zdse (editable), its extras and the test tools; install Debian packages the tests need

debs: ## Install the Debian packages (rabbitmq-server, nats-server, golang, govmomi, iproute2, chromium) when missing
	@scripts/ensure-debs

$(STAMP): pyproject.toml | debs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[vsphere,amqp,bench,web,test,dev]'
	touch $(STAMP)

sim: build/vcsim-zdse ## Build our govmomi vCenter simulator from Debian's govmomi sources

build/vcsim-zdse: tools/vcsim/main.go | debs
	scripts/build-vcsim $@

test: install ## Run lint, type checks and the whole test suite
	$(BIN)/ruff check zdse nodes tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -W error

soak: install ## The soak test for 15 minutes (make test runs it for 90 s), the tests marked soak (a million-row table), atheris for 5
	ZDSE_SOAK_SECONDS=900 $(BIN)/pytest -W error tests/test_soak.py
	$(BIN)/pytest -W error -m soak tests/test_bigtables.py
	ZDSE_FUZZ_SECONDS=300 $(BIN)/pytest -W error tests/test_fuzz.py

lint: $(STAMP) ## ruff only
	$(BIN)/ruff check zdse nodes tests benchmarks

typecheck: $(STAMP) ## mypy --strict on zdse/
	$(BIN)/mypy

run: install ## Run the cage from examples/zdse.toml (file and vsphere demo services) and zdse-web; Ctrl-C stops all
	scripts/run-demo

screenshots: install ## Run the demo and write docs/web-front.png and docs/web-vsphere.png from headless Chromium
	$(BIN)/python scripts/screenshots

bench-vsphere: $(STAMP) sim ## vsphere polling benchmark: 50 hosts, 2,000 VMs, every 5 s (benchmarks/README.md)
	$(BIN)/python benchmarks/vsphere_poll.py --hosts 50 --vms 2000 --interval 5

bench-notifications: $(STAMP) ## amqp bridge: oslo notifications into a latest-state table of 1,000 and 100,000 instances (benchmarks/README.md)
	$(BIN)/python benchmarks/notifications.py --sizes 1000,100000

clean: ## Remove the venv and build outputs
	rm -rf $(VENV) build
