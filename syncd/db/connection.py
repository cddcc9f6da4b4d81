"""Connections to PostgreSQL and what their errors mean."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import errorcodes, errors

from syncd.config.model import Database

Connection = psycopg2.extensions.connection


def connect(database: Database, *, application_name: str = "syncd") -> Connection:
    """A new connection. TCP keepalives notice a vanished server within a minute
    instead of hanging a sync on a dead socket."""
    kwargs: dict[str, Any] = {
        "connect_timeout": 10,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if database.password is not None:
        kwargs["password"] = database.password.reveal()
    conn: Connection = psycopg2.connect(database.dsn, **kwargs)
    with conn.cursor() as cur:
        # Timestamps come back as UTC instants whatever the server's default.
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


# The server going away or not yet there (SQLSTATE 57P01-57P03).
_SERVER_UNAVAILABLE = (errors.AdminShutdown, errors.CrashShutdown, errors.CannotConnectNow)

# The same transaction, tried again, can succeed (SQLSTATE 40P01, 40001).
_RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure)


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection (not the data) failed: worth a new connection and a retry.

    The connection exceptions (SQLSTATE class 08) and the server shutting down or not
    yet accepting connections. An OperationalError with no SQLSTATE at all is a
    broken socket (psycopg2 raises it without the server's word)."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    if not exc.pgcode:
        return True
    # Class 08's exceptions share no psycopg2 class of their own: its SQLSTATE says it.
    return isinstance(exc, _SERVER_UNAVAILABLE) or exc.pgcode.startswith(
        errorcodes.CLASS_CONNECTION_EXCEPTION
    )


def is_transient(exc: BaseException) -> bool:
    """True for a deadlock or a serialization failure: the same transaction, tried
    again, can succeed."""
    return isinstance(exc, _RETRYABLE)


def is_data_error(exc: BaseException) -> bool:
    """True when the server refused the data (SQLSTATE classes 22 and 23): the row is
    bad, retrying the same row can never succeed. (psycopg2 also raises DataError,
    with no SQLSTATE, when it cannot read a value the server returned: not the row's
    fault.)"""
    return isinstance(exc, psycopg2.DataError | psycopg2.IntegrityError) and bool(exc.pgcode)


def describe_db_error(exc: BaseException) -> str:
    """A psycopg2 error on one line: the server's primary message, no query text."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    lines = str(exc).strip().splitlines()
    text = primary or (lines[0] if lines else type(exc).__name__)
    code = getattr(exc, "pgcode", None)
    return f"{text} (SQLSTATE {code})" if code else text


def database_failure(exc: BaseException) -> str:
    """Why a run failed when the database did, as its error says it: `database: ...`."""
    return f"database: {describe_db_error(exc)}"


def rollback_quietly(conn: Connection) -> None:
    """Roll back what is left of a transaction that already failed; a connection that
    is gone has nothing to roll back, so its error is not news."""
    if not conn.closed:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()


def close_quietly(conn: Connection) -> None:
    """Close a connection we are giving up on, whatever state it is in."""
    with contextlib.suppress(psycopg2.Error):
        conn.close()
