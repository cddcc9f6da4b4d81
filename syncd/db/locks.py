"""The advisory locks that keep two syncd instances off the same work.

Session-level: held until released or until the connection ends, so a killed process
never leaves one behind. An entity's incremental runs and its preload take different
locks: incremental sync goes on while a long backfill runs.
"""

from __future__ import annotations

from syncd.db.connection import Connection


def incremental_lock(entity: str) -> str:
    """The lock an entity's incremental runs hold (one instance at a time), and that
    `syncd rewind` waits for."""
    return f"syncd:entity:{entity}"


def preload_lock(entity: str) -> str:
    """The lock an entity's preload holds: separate, so incremental sync goes on
    while a long backfill runs."""
    return f"syncd:preload:{entity}"


def try_lock(conn: Connection, name: str) -> bool:
    """Take the session-level advisory lock `name` if it is free; commits."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))
        row = cur.fetchone()
    conn.commit()
    return bool(row and row[0])


def unlock(conn: Connection, name: str) -> None:
    """Release the lock `name` taken by `try_lock`; commits."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))
    conn.commit()
