# make run  - a private PostgreSQL under ./var, the demo source and syncd, in the foreground
# make test - lint, types and the whole test suite; sets itself up from a fresh clone
# make test-fast - the unit tests only (no PostgreSQL, no child process): seconds
# make bench - the end-to-end benchmark (never part of `make test`); make bench-preload,
# make bench-scale (many entities, several instances)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast suite lint types bench bench-preload bench-scale system-packages venv clean deb deb-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "syncd needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# System tools the tests use, installed from the distribution when missing:
# the PostgreSQL server (initdb, pg_ctl) for the private clusters, promtool
# (package prometheus) to check the metrics exposition, systemd-analyze and
# /bin/kill (systemd, procps) to verify the unit file, libfaketime to run test
# instances with clocks that disagree.
system-packages:
	@missing=; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$$SYNCD_PG_BIN" ] || missing="$$missing postgresql"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -x /bin/kill ] || missing="$$missing procps"; \
	ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing="$$missing libfaketime"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check syncd tests devtools bench
	$(BIN)/ruff format --check syncd tests devtools bench

types: $(STAMP)
	$(BIN)/mypy syncd tests devtools bench

# pytest-xdist workers for the whole suite; each starts its own PostgreSQL cluster.
# More workers than CPUs pays: most tests wait on a daemon, a socket or the database.
# On 2 CPUs shared with other jobs (load 2-3): serial ~235 s, -n 2 134 s, -n 4 111 s
# (180 s at load 6). worksteal: the longest tests (~20 s each) do not end up queued
# behind each other on one worker.
TEST_WORKERS ?= 4

# The whole suite, in parallel.
suite: $(STAMP) system-packages
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

test: lint types suite

# Markers are set by tests/markers.py. The 200,000-record demo source test is a
# benchmark of the demo source in all but name: it alone would double the time.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m unit \
		--deselect tests/test_demo_source.py::test_200k_tasks_generate_and_page_quickly

run: $(STAMP) system-packages
	$(BIN)/python -m devtools.demo_run

bench: $(STAMP) system-packages
	$(BIN)/python -m bench.endtoend

bench-preload: $(STAMP) system-packages
	$(BIN)/python -m bench.preload

# N entities (default 1000), K instances (default 2), every: 1m, M minutes (default 4):
#   make bench-scale ARGS="--entities 200 --instances 3 --minutes 3"
bench-scale: $(STAMP) system-packages
	$(BIN)/python -m bench.scale $(ARGS)

clean:
	rm -rf $(VENV) var build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The Debian package, dist/syncd_<version>_<arch>.deb: the application in its own venv
# under /usr/lib/syncd, /usr/bin/syncd, the unit, /etc/syncd (packaging/deb/README.md).
deb:
	packaging/deb/build.sh dist

# Install that package here, run it, remove and purge it, and check that nothing is left
# (as root; installs lintian and PostgreSQL when missing): packaging/deb/check.sh.
deb-check: deb
	packaging/deb/check.sh
