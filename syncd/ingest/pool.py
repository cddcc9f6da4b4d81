"""The ingest side's few database connections, shared by concurrent pushes.

Pushes must not queue behind each other for a connection: a client told "busy, retry"
at once does better than one held while others write. So `acquire` never waits.
"""

from __future__ import annotations

import threading

import psycopg2.extensions

from syncd.config.model import Database
from syncd.db.connection import Connection, close_quietly, connect

APPLICATION_NAME = "syncd-ingest"  # how a push's session shows in pg_stat_activity


class ConnectionPool:
    """At most `size` connections in use; idle ones are kept for the next push.

    Connections come from `syncd.db.connection.connect` (password, keepalives, UTC), only
    when needed and outside the lock. `acquire` never waits: None means all are in use."""

    def __init__(self, database: Database, size: int) -> None:
        self._database = database
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False

    def connect(self) -> Connection:
        """A new connection outside the pool (and its limit)."""
        return connect(self._database, application_name=APPLICATION_NAME)

    def acquire(self) -> Connection | None:
        """A connection and its slot, None if all are in use; psycopg2.Error if the
        database cannot be reached (the slot is given back)."""
        if not self._slots.acquire(blocking=False):
            return None
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None and not conn.closed:
            return conn
        try:
            return self.connect()
        except BaseException:
            self._slots.release()
            raise

    def replace(self, lost: Connection) -> Connection:
        """A new connection in the slot of `lost`. The idle ones are closed too: a lost
        connection usually means the server restarted. psycopg2.Error if it cannot
        connect; the caller still `release`s `lost` then."""
        with self._lock:
            stale, self._idle = self._idle, []
        for conn in [*stale, lost]:
            close_quietly(conn)
        return self.connect()

    def release(self, conn: Connection) -> None:
        """Give back the slot of `acquire`, keeping `conn` if it is healthy and idle."""
        try:
            with self._lock:
                keep = (
                    not self._closed
                    and not conn.closed
                    and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
                )
                if keep:
                    self._idle.append(conn)
            if not keep:
                close_quietly(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections; those in use close as they are released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)
