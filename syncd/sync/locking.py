"""A run's connection and the advisory lock it holds for the whole run.

The lock (db/locks.py) is what makes a run the only one of its kind for its entity,
on any instance: it is taken before anything is read and released only once the run
is recorded. A lost connection loses the lock with it, so the connection that
replaces it must take the lock again, and a run that finds it taken must end.

Connections are kept for the next run (at most `max_idle`, the runs that can go on
at once): a new PostgreSQL connection costs a server process and an authentication,
more than a small run itself. One goes back only once its lock is released and its
transaction rolled back, so a run never inherits anything but the session settings
every connection has (`SET TIME ZONE 'UTC'`) and its entity's empty temp table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import structlog

from syncd.db.connection import (
    Connection,
    close_quietly,
    database_failure,
    describe_db_error,
    is_connection_error,
)
from syncd.db.locks import try_lock, unlock
from syncd.db.schema import PendingMigration
from syncd.errors import SyncdError

log = structlog.get_logger("syncd.sync.locking")


class LostLock(SyncdError):
    """After a reconnect another instance holds the lock: this run must end."""


@dataclass
class LockedSession:
    """The connection a run uses and the lock it holds on it. `conn` changes when a
    lost connection is replaced (`RunLocks.reconnect`) or the run's end is recorded
    on a new one."""

    conn: Connection
    lock: str


class RunLocks:
    """Opens, reopens and releases lock-holding connections."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        migration: PendingMigration | None = None,
        max_idle: int = 0,
    ) -> None:
        self.connect = connect
        self.migration = migration  # done by the first run that reaches the database
        self.max_idle = max_idle
        self._idle: list[Connection] = []
        self._guard = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the idle connections; those in use close when their runs release them."""
        with self._guard:
            self._closed, idle, self._idle = True, self._idle, []
        for conn in idle:
            close_quietly(conn)

    def _take(self) -> tuple[Connection, bool]:
        """An idle connection (True) or a new one (False)."""
        with self._guard:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        return self.connect(), False

    def _give_back(self, conn: Connection) -> None:
        with self._guard:
            if not self._closed and not conn.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        close_quietly(conn)

    def _lock(self, conn: Connection, lock: str, reused: bool) -> tuple[Connection, bool]:
        """Take `lock` on `conn`; a kept connection the server dropped meanwhile (a
        restart) is replaced by a new one once. Returns the connection and whether
        the lock was free."""
        try:
            return conn, try_lock(conn, lock)
        except psycopg2.Error as exc:
            if not (reused and is_connection_error(exc)):
                raise
        close_quietly(conn)
        conn = self.connect()
        return conn, try_lock(conn, lock)

    def open(self, lock: str, entity: str) -> tuple[LockedSession | None, str | None]:
        """A new connection holding `lock`, the entity's pending migration done, or why
        there is none: (None, None) when another instance holds the lock (the run is
        skipped), (None, error) when the database cannot be reached or the table
        cannot take the configuration's columns."""
        try:
            conn, reused = self._take()
        except psycopg2.Error as exc:
            return None, f"cannot connect to the database: {describe_db_error(exc)}"
        session = LockedSession(conn, lock)
        try:
            session.conn, free = self._lock(conn, lock, reused)
            if free:
                if self.migration is not None:
                    self.migration.ensure(session.conn, entity)
                return session, None
        except psycopg2.Error as exc:
            self.release(session)
            return None, database_failure(exc)
        except SyncdError as exc:
            self.release(session)
            return None, str(exc)
        self._give_back(session.conn)
        log.info("sync.skipped", lock=lock, reason="another instance holds the lock")
        return None, None

    def reconnect(self, session: LockedSession) -> None:
        """Replace the session's lost connection by a new one holding the lock again;
        LostLock if another instance took it meanwhile."""
        close_quietly(session.conn)
        conn = self.connect()
        if not try_lock(conn, session.lock):
            close_quietly(conn)
            raise LostLock("another instance took the lock during a reconnect")
        session.conn = conn

    def release(self, session: LockedSession) -> None:
        """Unlock, then close. PostgreSQL frees a session's locks only once its backend
        has exited, a moment after the client hung up: without the explicit unlock,
        the next run of the entity could find its own lock still held and skip."""
        conn = session.conn
        if not conn.closed:
            try:
                conn.rollback()
                unlock(conn, session.lock)
            except psycopg2.Error:
                close_quietly(conn)  # in an unknown state: never kept
                return
        self._give_back(conn)
