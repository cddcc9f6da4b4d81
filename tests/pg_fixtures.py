"""PostgreSQL fixtures: one throwaway cluster per test session, a fresh database per test.

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

import pytest

from devtools.devcluster import Cluster

# PostgreSQL truncates identifiers beyond 63 bytes; keep room for the unique suffix.
_NAME_PREFIX_LEN = 40


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A started cluster on a free port, stopped and deleted when the session ends."""
    # Straight under the temp dir rather than in pytest's tmp_path: that one is private
    # to its owner (0700), which the `postgres` user could not traverse when we are root.
    datadir = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
    cluster = Cluster(datadir)
    try:
        cluster.start()
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
