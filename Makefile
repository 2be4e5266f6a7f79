# Entry points: `make run`, `make test` (see README). Everything is installed by these targets.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test test-fast test-faults lint fmt bench-api clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

run: install  ## serve the API at http://127.0.0.1:8000/api (embedded PostgreSQL unless DATABASE_URL)
	$(VENV)/bin/python -m app.dev.run

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app tests migrations bench scripts

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint  ## lint, type-check, then the whole suite against real PostgreSQL
	$(VENV)/bin/pytest -q

test-fast: lint  ## the inner loop: everything but the suites that start a stack (tests/stack, tests/faults, tests/cluster)
	$(VENV)/bin/pytest -q -m "not stack"

test-faults: install  ## fault injection under load through a private stack (tests/faults; make test runs it too)
	$(VENV)/bin/pytest -q -rxX tests/faults

clean:
	rm -rf $(VENV) $(TOOLS) .data .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (bench/README.md). Extra flags go in BENCH_ARGS, e.g. BENCH_ARGS="--duration 30".
.PHONY: bench bench-api bench-seed bench-anatomy

bench: install  ## after `make stack`: load vs the stack and its baselines (docs/BENCHMARKS.md); --quick < 5 min
	$(VENV)/bin/python -m bench.loadtest $(BENCH_ARGS)

bench-api: install  ## issue 2 speed: wrk at 64 connections, 2 workers, no cache; report in bench/results/
	$(VENV)/bin/python -m bench.api_speed $(BENCH_ARGS)

bench-seed: install  ## fill DATABASE_URL (migrated) with the default data set; --truncate empties it first
	$(VENV)/bin/python -m bench.seed $(BENCH_ARGS)

bench-anatomy: install  ## CPU cost of each layer of a read request, against a seeded DATABASE_URL
	$(VENV)/bin/python -m bench.anatomy $(BENCH_ARGS)

.PHONY: bench-overload
bench-overload: install  ## after `make stack`: issue 9, ramp to 10,000 connections, shedding on and off (~8 min)
	$(VENV)/bin/python -m bench.overload $(BENCH_ARGS)

.PHONY: bench-cache bench-observability
bench-cache: install  ## after `make stack`: issue 6, viral article at 2,000 connections, cache on and off (~3 min)
	$(VENV)/bin/python -m bench.onoff cache $(BENCH_ARGS)

bench-observability: install  ## after `make stack`: issue 8, read req/s with metrics/logs/traces on and off (~6 min)
	$(VENV)/bin/python -m bench.onoff observability $(BENCH_ARGS)

# The scale topology on this machine (deploy/stack/README.md): nginx :8080 → uvicorn workers →
# PgBouncer :6432 → PostgreSQL :5433, Redis :6380 (queue) and :6381 (cache); state and stack.env under .stack/.
.PHONY: stack stack-down

stack: install  ## start (or check) the whole stack; installs Debian packages when root
	$(VENV)/bin/python -m scripts.stack up

stack-down: install  ## stop every component of the stack (data stays in .stack/)
	$(VENV)/bin/python -m scripts.stack down

# Several API hosts on this machine (docs/OPERATIONS.md "Several hosts: make cluster"): N hosts
# in network namespaces (CLUSTER_HOSTS, default 3) → PgBouncer → PostgreSQL primary + streaming
# replica, Redis, the job worker; nginx on 127.0.0.1:8280; state and cluster.env under .cluster/.
.PHONY: cluster cluster-down

cluster: install  ## start (or check) the cluster; root: installs Debian packages, makes namespaces
	$(VENV)/bin/python -m scripts.cluster up

cluster-down: install  ## stop the cluster and remove its network (data stays in .cluster/)
	$(VENV)/bin/python -m scripts.cluster down
