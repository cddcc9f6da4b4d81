"""What a PostgreSQL error means for a retry (syncd.db.connection), judged on errors
a real server raised with each SQLSTATE, so psycopg2's own classes are the ones the
code sees in production."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from syncd.db.connection import (
    database_failure,
    is_connection_error,
    is_data_error,
    is_transient,
)
from syncd.db.store import _refused_for_a_row


@pytest.fixture
def conn(pg_conn: Any) -> Any:
    return pg_conn


def raised(conn: Any, sqlstate: str) -> psycopg2.Error:
    """The error the server raises with `sqlstate`, as psycopg2 hands it over."""
    try:
        with conn.cursor() as cur:
            cur.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = %s; END $$", (sqlstate,)
            )
    except psycopg2.Error as exc:
        conn.rollback()
        assert exc.pgcode == sqlstate
        return exc
    raise AssertionError("nothing raised")


# SQLSTATE: (connection error, transient, data error, a row's fault)
MEANINGS = {
    "08000": (True, False, False, False),
    "08006": (True, False, False, False),
    "08P01": (True, False, False, False),
    "57P01": (True, False, False, False),
    "57P02": (True, False, False, False),
    "57P03": (True, False, False, False),
    "57P04": (False, False, False, False),
    "40P01": (False, True, False, False),
    "40001": (False, True, False, False),
    "40002": (False, False, False, False),
    "55P03": (False, False, False, False),
    "22001": (False, False, True, True),
    "22020": (False, False, True, True),  # a code psycopg2 has no class of its own for
    "23505": (False, False, True, True),
    "21000": (False, False, False, True),
    "54001": (False, False, False, True),
    "42P01": (False, False, False, False),
}


@pytest.mark.parametrize(("sqlstate", "meaning"), MEANINGS.items())
def test_what_each_sqlstate_means(
    conn: Any, sqlstate: str, meaning: tuple[bool, bool, bool, bool]
) -> None:
    exc = raised(conn, sqlstate)
    assert (
        is_connection_error(exc),
        is_transient(exc),
        is_data_error(exc),
        _refused_for_a_row(exc),
    ) == meaning
    assert database_failure(exc) == f"database: boom (SQLSTATE {sqlstate})"


def test_errors_without_the_servers_word() -> None:
    assert is_connection_error(psycopg2.OperationalError("server closed the connection"))
    assert is_connection_error(psycopg2.InterfaceError("connection already closed"))
    assert not is_connection_error(ValueError("no"))
    assert not is_transient(ValueError("no"))
    # psycopg2's own DataError, reading a value back: not the row's fault.
    assert not is_data_error(psycopg2.DataError("unable to parse date"))


def test_a_terminated_backend_is_a_connection_error(conn: Any, pg_dsn: str) -> None:
    other = psycopg2.connect(pg_dsn)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone() or (None,)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        conn.commit()
        with pytest.raises(psycopg2.Error) as caught, other.cursor() as cur:
            cur.execute("SELECT 1")
        assert is_connection_error(caught.value)
    finally:
        other.close()
