# make run  - a private PostgreSQL under ./var, the demo source and syncd, in the foreground
# make test - lint, types and the whole test suite; sets itself up from a fresh clone
# make bench - the end-to-end benchmark (never part of `make test`)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint types unit bench system-packages venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "syncd needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The PostgreSQL server binaries (initdb, pg_ctl) the tests and `make run` start
# their private clusters with. Installed from the distribution when missing.
system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "$$SYNCD_PG_BIN" ]; then \
		echo "installing the PostgreSQL server (Debian package postgresql)"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check syncd tests
	$(BIN)/ruff format --check syncd tests

types: $(STAMP)
	$(BIN)/mypy syncd

unit: $(STAMP) system-packages
	$(BIN)/pytest

test: lint types unit

run: $(STAMP) system-packages
	$(BIN)/python -m syncd.demo_run

bench: $(STAMP) system-packages
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
