"""Fixtures shared by the whole test suite.

PostgreSQL (`pg_cluster`, one throwaway cluster per session or per xdist worker;
`pg_dsn`, a fresh database per test) is defined in tests/pg_fixtures.py; each test's
markers (unit, pg, process) are set by tests/markers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_source import DemoSource
from syncd import logs
from syncd.metrics import disable_created_series
from tests.daemon_support import Daemons, daemons
from tests.support import NO_RECORDS, MakeDemo

pytest_plugins = ["tests.pg_fixtures", "tests.markers"]


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """syncd's logs at INFO, as JSON lines: what an operator's journal would hold."""
    logs.configure(json=True)


@pytest.fixture(autouse=True, scope="session")
def _no_created_series() -> None:
    """As the daemon's entry point does: what tests scrape is what the daemon serves."""
    disable_created_series()


@pytest.fixture
def make_demo() -> Iterator[MakeDemo]:
    """Starts demo sources, `make_demo(**DemoSource arguments)`; all stopped at teardown.

    A module whose tests share their data overrides `demo` with one line over this."""
    started: list[DemoSource] = []

    def make(**kwargs: Any) -> DemoSource:
        demo = DemoSource(**kwargs).start()
        started.append(demo)
        return demo

    yield make
    for demo in started:
        demo.on_request = None  # a hook still holding requests back would delay the stop
        demo.stop()


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    """A demo source without records: enough for the demo configuration's shape and a
    URL. Modules that need data override this fixture."""
    return make_demo(counts=NO_RECORDS)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Daemons]:
    """Starts `syncd run` processes; whatever still runs is killed at teardown."""
    with daemons(tmp_path) as registry:
        yield registry
