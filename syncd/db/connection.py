"""Connections to PostgreSQL and what their errors mean."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2
import psycopg2.extensions

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


def is_connection_error(exc: BaseException) -> bool:
    """True when the connection (not the data) failed: worth a new connection and a retry.

    SQLSTATE class 08 is connection exceptions; 57P01-57P03 are the server shutting
    down or not yet accepting connections. An error with no SQLSTATE at all from
    psycopg2 is a broken socket."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    code = exc.pgcode or ""
    return code == "" or code.startswith("08") or code in ("57P01", "57P02", "57P03")


def is_transient(exc: BaseException) -> bool:
    """True for a deadlock (40P01) or a serialization failure (40001): the same
    transaction, tried again, can succeed."""
    return getattr(exc, "pgcode", None) in ("40P01", "40001")


def is_data_error(exc: BaseException) -> bool:
    """True for SQLSTATE classes 22 (data) and 23 (integrity): the row is bad, retrying
    the same row can never succeed."""
    code = getattr(exc, "pgcode", None) or ""
    return code[:2] in ("22", "23")


def describe_db_error(exc: BaseException) -> str:
    """A psycopg2 error on one line: the server's primary message, no query text."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    lines = str(exc).strip().splitlines()
    text = primary or (lines[0] if lines else type(exc).__name__)
    code = getattr(exc, "pgcode", None)
    return f"{text} (SQLSTATE {code})" if code else text


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
