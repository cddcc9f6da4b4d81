"""PostgreSQL fixtures: one throwaway cluster per test session, a fresh database per test.

Under pytest-xdist every worker is a session of its own, so each worker starts its own
cluster, in its own data directory, on its own free port: workers share nothing.

Loaded through `pytest_plugins` in tests/conftest.py. Works as root too: the cluster
then runs as the `postgres` user (see devtools.devcluster).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools.devcluster import Cluster, DevClusterError, free_port

# PostgreSQL truncates identifiers beyond 63 bytes; keep room for the unique suffix.
_NAME_PREFIX_LEN = 40
# The free port is picked before initdb runs, and another worker's test may take it
# meanwhile: then the start fails, and a new free port is tried.
_START_ATTEMPTS = 3


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A started cluster on a free port, stopped and deleted when the session ends."""
    # Straight under the temp dir rather than in pytest's tmp_path: that one is private
    # to its owner (0700), which the `postgres` user could not traverse when we are root.
    datadir = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
    cluster = Cluster(datadir)
    try:
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                cluster.start()
                break
            except DevClusterError:
                if attempt == _START_ATTEMPTS:
                    raise
                cluster = Cluster(datadir, port=free_port())
        yield cluster
    finally:
        try:
            # Immediate: nothing in a throwaway cluster needs a clean checkpoint.
            cluster.stop("immediate")
        finally:
            shutil.rmtree(datadir, ignore_errors=True)


def _database_name(test_name: str) -> str:
    """A unique database name that still says which test it belongs to."""
    readable = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:_NAME_PREFIX_LEN]
    return f"t_{readable}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_dsn(pg_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of an empty database of this test's own, dropped afterwards."""
    name = _database_name(request.node.name)
    dsn = pg_cluster.create_database(name)
    try:
        yield dsn
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[Any]:
    """A psycopg2 connection to this test's database, closed afterwards."""
    connection = psycopg2.connect(pg_dsn)
    try:
        yield connection
    finally:
        connection.close()
