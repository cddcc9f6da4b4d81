"""Fixtures shared by the whole test suite."""

# --- PostgreSQL: pg_cluster (one throwaway cluster per session), pg_dsn (fresh database
# per test). Defined in tests/pg_fixtures.py. ---
pytest_plugins = ["tests.pg_fixtures"]
# --- end PostgreSQL ---

import pytest  # noqa: E402

from syncd import logs  # noqa: E402
from syncd.metrics import disable_created_series  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """syncd's logs at INFO, as JSON lines: what an operator's journal would hold."""
    logs.configure(json=True)


@pytest.fixture(autouse=True, scope="session")
def _no_created_series() -> None:
    """As the daemon's entry point does: what tests scrape is what the daemon serves."""
    disable_created_series()
