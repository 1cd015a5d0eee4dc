# KVStore++ developer commands. `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= run-data
PORT ?= 8080

.PHONY: run stop test lint setup system-deps bench-deps bench-servers bench bench-auth bench-replication bench-flood bench-login-flood bench-kvb bench-archive clean \
	compose-up compose-down test-compose chaos chaos-docker chaos-soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench,chaos]'
	touch $@

setup: $(VENV)/.installed

# Debian packages the tests and benchmarks use: promtool (metrics format check), wrk, redis,
# systemd-analyze (the unit files' checks).
system-deps:
	@command -v promtool >/dev/null && command -v wrk >/dev/null && command -v redis-server >/dev/null && command -v systemd-analyze >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus wrk redis-server systemd >/dev/null; }

# A local cluster in the foreground: primary p on $(PORT), replicas r1 and r2 on the next two ports.
run: setup
	$(BIN)/python -m kvstore.cli.cluster start --data-dir $(DATA_DIR) --port $(PORT)

# Stops a cluster `make run` started (from another terminal), by the PIDs it recorded.
stop:
	$(BIN)/python -m kvstore.cli.cluster stop --data-dir $(DATA_DIR)

test: lint system-deps
	$(BIN)/python -m pytest -q

# mypy (node/ and replication/ strictly, the rest of the package and bench/ in normal mode; see
# pyproject's [tool.mypy]) and ruff. mypy finds packages by folder name, and kvstore.node lives
# in node/ (pyproject's package-dir), so it reads them through links named as they are imported.
TYPECHECK := .typecheck/kvstore
lint: setup
	mkdir -p $(TYPECHECK) && touch $(TYPECHECK)/__init__.py
	for package in node replication cli chaos client; do ln -sfn ../../$$package $(TYPECHECK)/$$package; done
	$(BIN)/mypy $(TYPECHECK) bench
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The compose cluster (compose/): p, r1 and r2 in containers on 127.0.0.1:8080-8082, built with
# no registry (a local Debian base image, wheels from the host). compose-down keeps the data
# volumes; `compose/cluster.sh down -v` drops them.
compose-up: | $(BIN)/python
	PYTHON=$(abspath $(BIN))/python compose/cluster.sh up

compose-down:
	compose/cluster.sh down

# The compose tests (not in `make test`; .ci/run runs them after): the cluster up, checked with
# kvctl and removed again; then kvchaos's docker backend (promote, partition) on it; and the node
# under systemd as PID 1 in a container (test_systemd_run.py).
test-compose: setup
	$(BIN)/python -m pytest -q -m compose tests/compose/

# The chaos harness (kvchaos; reports in $(CHAOS_REPORT)/report.json and report.html; exit 1 when
# a checker fails). chaos: every scenario on local processes; chaos-docker: every scenario on
# the compose cluster (project kvchaos, images built first); chaos-soak: the mixed scenario on
# the compose cluster for CHAOS_SOAK_S seconds, every kind of fault again and again.
CHAOS_REPORT ?= chaos-report
CHAOS_DURATION_S ?= 20
CHAOS_SOAK_S ?= 600
chaos: setup
	$(BIN)/kvchaos run --backend process --scenario all --duration $(CHAOS_DURATION_S) --report $(CHAOS_REPORT)

chaos-docker: setup
	$(BIN)/kvchaos run --backend docker --scenario all --duration $(CHAOS_DURATION_S) --report $(CHAOS_REPORT)

chaos-soak: setup
	$(BIN)/kvchaos run --backend docker --scenario mixed --duration $(CHAOS_SOAK_S) --report $(CHAOS_REPORT)

# etcd (Debian's etcd-server) is only needed as the benchmark's anchor.
bench-deps: system-deps
	@command -v etcd >/dev/null || { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; }

bench-servers: setup bench-deps
	$(BIN)/python -m bench.bakeoff

bench: setup bench-deps
	$(BIN)/python -m bench.node_bench --write
	$(BIN)/python -m bench.recovery_bench --write
	$(BIN)/python -m bench.auth_bench --write
	$(BIN)/python -m bench.replication_bench --write

# Replicas attached, lag, promotion, catch-up of a million keys (also part of `make bench`).
bench-replication: setup system-deps
	$(BIN)/python -m bench.replication_bench --write

# kvb get-heavy beside wrk -t2 -c50 on one node, the ratio (bench/results/RESULTS-kvb.md).
bench-kvb: setup system-deps
	$(BIN)/python -m bench.kvb_vs_wrk --write

# Another client's latency while one address floods the node (bench/results/RESULTS-flood.md).
bench-flood: setup
	$(BIN)/python -m bench.flood --write

# Bad logins from fresh addresses: a real login's wait and another client's GETs (a recorded run: bench/results/RESULTS-login-flood.md).
bench-login-flood: setup
	$(BIN)/python -m bench.login_flood_bench

# Archiving off vs on (file://, SeaweedFS S3): PUT latency, archive MB/s plain and encrypted
# (bench/results/RESULTS-archive.md); ARCHIVE_BENCH_ARGS=--restore adds a 1,000,000-key restore.
ARCHIVE_BENCH_ARGS ?=
bench-archive: setup system-deps
	$(BIN)/python -m bench.archive_bench --write $(ARCHIVE_BENCH_ARGS)

# Authorization on vs off on the data path (also part of `make bench`).
bench-auth: setup system-deps
	$(BIN)/python -m bench.auth_bench --write

clean:
	rm -rf $(VENV) $(DATA_DIR) $(CHAOS_REPORT) .pytest_cache .hypothesis .mypy_cache .ruff_cache .typecheck *.egg-info build compose/wheelhouse
