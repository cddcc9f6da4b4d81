"""Fixtures shared by the whole test suite."""

# --- PostgreSQL: pg_cluster (one throwaway cluster per session), pg_dsn (fresh database
# per test). Defined in tests/pg_fixtures.py. ---
pytest_plugins = ["tests.pg_fixtures"]
# --- end PostgreSQL ---
