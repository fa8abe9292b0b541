# The shop's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# npm packages (versions in each package-lock.json): Swagger UI's and ReDoc's files, which the shop
# serves itself, and the TypeScript client's tools. Lifecycle scripts are not run.
NPM_CI := npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

node_modules/.installed: package.json package-lock.json
	$(NPM_CI)
	touch $@

clients/typescript/node_modules/.installed: clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && $(NPM_CI)
	touch $@

.PHONY: help install run migrate test lint format fuzz bench bench-smoke profile loadtest backup restore soak images up down stack-test

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed node_modules/.installed clients/typescript/node_modules/.installed ## Make .venv and node_modules with the pinned requirements

migrate: install ## Apply database migrations
	$(FLASK) db upgrade

run: migrate ## Serve the API on http://127.0.0.1:8000 with demo data (embedded defaults)
	$(FLASK) seed --categories 5 --products 100 --if-empty
	$(FLASK) run --host $(HOST) --port $(PORT)

# Coverage is always measured; CI (with every service) requires COV_FAIL_UNDER=90.
COV_FAIL_UNDER ?= 0

test: install ## Run the whole test suite with coverage
	$(BIN)/python -m pytest --cov=shop --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_FAIL_UNDER)

# What git tracks, as pre-commit passes it to a hook: every file, and the text (non-binary) ones.
TRACKED := git ls-files -z --
TEXT := git grep -zIl '' --

lint: install ## The checks of .pre-commit-config.yaml, without pre-commit: ruff, file hygiene, workflow schema
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(TRACKED) '*.yaml' '*.yml' | xargs -0r $(BIN)/check-yaml
	$(TRACKED) '*.json' | xargs -0r $(BIN)/check-json
	$(TRACKED) '*.toml' | xargs -0r $(BIN)/check-toml
	$(TEXT) | xargs -0r $(BIN)/end-of-file-fixer
	$(TEXT) | xargs -0r $(BIN)/trailing-whitespace-fixer --markdown-linebreak-ext=md
	$(TRACKED) | xargs -0r $(BIN)/check-added-large-files --maxkb=500 --enforce-all
	$(TEXT) | xargs -0r $(BIN)/detect-private-key
	$(TRACKED) '.github/workflows/*.yml' '.github/workflows/*.yaml' | xargs -0r $(BIN)/check-jsonschema --builtin-schema vendor.github-workflows
	$(TRACKED) '.github/workflows/*.yml' '.github/workflows/*.yaml' | xargs -0r $(BIN)/actionlint

format: install ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

fuzz: install ## Fuzz the live API with Schemathesis, as a customer and as staff (FUZZ_DATABASE_URL, else SQLite)
	$(BIN)/python -m tests.security.fuzz

# Benchmarks and load tests: each starts what it needs on loopback and stops it (README "Performance").
BENCH_SECONDS ?= 5
USERS ?= 200
SPAWN_RATE ?= 20
DURATION ?= 60
PROCESSES ?= 0

bench: install ## Measure the shop against this machine's ceilings; writes docs/performance.md (a few minutes)
	$(BIN)/python bench/run.py --seconds $(BENCH_SECONDS)

bench-smoke: install ## The benchmark in brief (3 s a scenario, the flash sale, 1,000 connections for 10 s): CI runs it
	$(BIN)/python bench/run.py --seconds 3 --rounds 1 --mix-seconds 10 --mix-connections 1000

profile: install ## py-spy on the workers under each direct scenario and ceiling: reports/profile/ (stacks, summary)
	$(BIN)/python bench/run.py --profile --seconds $(BENCH_SECONDS)

loadtest: install ## Locust journeys, headless, DURATION s (USERS, SPAWN_RATE; HOST=url, else a local stack)
	$(BIN)/python bench/loadtest.py --users $(USERS) --spawn-rate $(SPAWN_RATE) --seconds $(DURATION) \
		--processes $(PROCESSES) $(if $(filter command line,$(origin HOST)),--host $(HOST))

# Backups and the soak run (README "Reliability").
SOAK_SECONDS ?= 600

backup: ## Dump DATABASE_URL (PostgreSQL) with pg_dump -Fc to BACKUP (default backups/shop-<UTC time>.dump)
	bash scripts/backup.sh $(BACKUP)

restore: ## Restore BACKUP into a new database RESTORE_DATABASE_URL with pg_restore; the live one is untouched
	bash scripts/restore.sh "$(BACKUP)" "$(RESTORE_DATABASE_URL)"

soak: install ## 10 minutes of steady load on a local stack: worker memory, DB connections, metrics files stay flat
	$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_SECONDS)

# Containers (README "Run the full stack"): Docker Compose where a Docker engine answers, else Podman with
# docker-compose.debian.yml (every image built from Debian's packages; set up as root when missing).
STACK_TEST_SECONDS ?= 840

images: install ## Build every image the Compose stack runs, once each, and report their sizes
	$(BIN)/python containers/stack.py images

up: install ## The full stack (app x2, nginx, postgres, redis, rabbitmq, celery, monitoring); makes .env and a certificate when missing
	containers/prepare.sh
	$(BIN)/python containers/stack.py up --build

down: install ## Stop the Compose stack (volumes are kept)
	$(BIN)/python containers/stack.py down

stack-test: install ## Build and run the Compose stack, check it end to end over TLS (a replica removed under load), then remove it
	STACK_TEST_SECONDS=$(STACK_TEST_SECONDS) timeout --kill-after=60 $$(( $(STACK_TEST_SECONDS) + 120 )) \
		$(BIN)/python containers/stack_test.py
