# Live Offers: `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# The demo's pause: someone trying the shop waits ten seconds, not the thirty a shop would use.
DEMO_PAUSE_SECONDS ?= 10

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck check bench simulate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

install: $(VENV)/.installed ## create .venv and install requirements.txt (idempotent)

run: export PAUSE_SECONDS ?= $(DEMO_PAUSE_SECONDS)
run: install ## migrate, load the demo, make a staff user, serve (HOST=127.0.0.1 PORT=8000, PAUSE_SECONDS=10)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py bootstrap_demo
	$(PY) manage.py ensure_staff
	@echo "Shop http://$(HOST):$(PORT)/   Dashboard http://$(HOST):$(PORT)/dashboard/   Admin http://$(HOST):$(PORT)/admin/"
	@echo "Pauses of $$PAUSE_SECONDS s: add to the cart, look around, wait."
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

# The unit tests run on every core; the tests of servers, services and training one at a time
# (they pin processes to cores, time deadlines and share the machine's Redis and PostgreSQL).
UNIT := not e2e and not services and not slow

test: install ## lint, typecheck, then the whole test suite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
	$(PY) -m pytest -n auto -m "$(UNIT)"
	$(PY) -m pytest --durations=25 -m "not ($(UNIT))"

test-fast: install ## the unit tests only: no servers, no Redis or PostgreSQL, no training (under a minute)
	$(PY) -m pytest -q -n auto -m "$(UNIT)"

lint: install ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install ## mypy, strict
	$(PY) -m mypy .

check: lint typecheck ## lint and typecheck

bench: install ## the benchmarks (see docs/BENCHMARKS.md)
	$(PY) manage.py bench all

simulate: install ## simulated shoppers against the server of `make run`
	$(PY) manage.py simulate --url http://$(HOST):$(PORT) --site demo --shoppers 50 --seconds 120

clean: ## remove .venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
