# cryomesh — the two commands that matter are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never

.PHONY: install system-deps demo test test-busy lint format bench bench-load bench-scaling bench-sim clean

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --python $(VENV)/bin/python
	@touch $@

# Snakemake and its TES executor plugin pin py-tes 0.4 (cryomesh's own environment has 1.x):
# their own environment, locked in deploy/snakemake/requirements.txt (tests/test_snakemake_tes_e2e.py).
SNAKEMAKE_VENV := .venv-snakemake
$(SNAKEMAKE_VENV)/.installed: deploy/snakemake/requirements.txt deploy/snakemake/make-env.sh $(VENV)/.installed
	bash deploy/snakemake/make-env.sh $(SNAKEMAKE_VENV) $(VENV)/bin/uv
	@touch $@

# The project's own modules are byte-compiled too (the environment is when uv installs it,
# pyproject.toml [tool.uv]): the tests start hundreds of hub, agent and CLI processes, and
# where PYTHONDONTWRITEBYTECODE is set each would compile what it imports at every start.
# compileall compiles again only the files that changed.
SOURCES := hub shared site_agent cryomesh_cli bench

## install: Python dependencies into .venv, exactly as locked in uv.lock (and .venv-snakemake for Snakemake)
install: $(VENV)/.installed $(SNAKEMAKE_VENV)/.installed
	@$(VENV)/bin/python -m compileall -q $(SOURCES)

## system-deps: PostgreSQL, Slurm, munge, Chromium, stress-ng, RELION, podman and busybox-static from Debian's packages (as root, when missing)
system-deps:
	@bash scripts/install-system-deps.sh

## demo: an embedded hub and three enrolled site agents on loopback, a real RELION Class2D (DEMO_ARGS="--duration 180 --keep")
demo: install system-deps
	$(VENV)/bin/cryomesh demo $(DEMO_ARGS)

## test: the whole suite, against real PostgreSQL and Slurm started by the tests, on TEST_WORKERS
##       pytest-xdist workers at once (TEST_WORKERS=0: one process); prints the 20 slowest tests
TEST_WORKERS ?= 4
test: install system-deps
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --durations=20 $(PYTEST_ARGS)

## test-busy: the process-level tests with every CPU kept busy by stress-ng (BUSY_TESTS=..., BUSY_CPUS=N)
BUSY_TESTS ?= tests/test_jobs_e2e.py tests/test_agent_process.py tests/test_slurm_jobs.py \
	tests/test_transfers_e2e.py tests/test_demo.py tests/test_two_hubs.py
test-busy: install system-deps
	@bash scripts/test-busy.sh --durations=20 $(BUSY_TESTS) $(PYTEST_ARGS)

## lint: ruff (lint and format check) and mypy (strict)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: benchmarks; results go into docs/benchmarks.md (BENCH_ARGS="--hub-load full|quick|skip")
bench: install
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.placer
	$(VENV)/bin/python -m bench.placement_sim
	$(VENV)/bin/python -m bench.history_flush

## bench-scaling: hub processes on one PostgreSQL, each held to the same CPU quota (needs root and cgroup v1 cpu)
bench-scaling: install
	$(VENV)/bin/python -m bench.process_scaling $(SCALING_ARGS)

## bench-sim: only the placement simulation (issue 12): a month of the network under four placement policies
bench-sim: install
	$(VENV)/bin/python -m bench.placement_sim $(SIM_ARGS)

## bench-load: the hub's heartbeat load test alone (LOAD_ARGS="--quick", or see python -m bench.heartbeat_load -h)
LOAD_ARGS ?= --quick
bench-load: install
	$(VENV)/bin/python -m bench.heartbeat_load $(LOAD_ARGS)

clean:
	rm -rf $(VENV) $(SNAKEMAKE_VENV) .pytest_cache .mypy_cache .ruff_cache
