"""A run's connection and the advisory lock it holds for the whole run.

The lock (db/locks.py) is what makes a run the only one of its kind for its entity,
on any instance: it is taken before anything is read and released only once the run
is recorded. A lost connection loses the lock with it, so the connection that
replaces it must take the lock again, and a run that finds it taken must end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
import structlog

from syncd.db.connection import Connection, close_quietly, database_failure, describe_db_error
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
        self, connect: Callable[[], Connection], migration: PendingMigration | None = None
    ) -> None:
        self.connect = connect
        self.migration = migration  # done by the first run that reaches the database

    def open(self, lock: str, entity: str) -> tuple[LockedSession | None, str | None]:
        """A new connection holding `lock`, the entity's pending migration done, or why
        there is none: (None, None) when another instance holds the lock (the run is
        skipped), (None, error) when the database cannot be reached or the table
        cannot take the configuration's columns."""
        try:
            conn = self.connect()
        except psycopg2.Error as exc:
            return None, f"cannot connect to the database: {describe_db_error(exc)}"
        session = LockedSession(conn, lock)
        try:
            if try_lock(conn, lock):
                if self.migration is not None:
                    self.migration.ensure(conn, entity)
                return session, None
        except psycopg2.Error as exc:
            self.release(session)
            return None, database_failure(exc)
        except SyncdError as exc:
            self.release(session)
            return None, str(exc)
        close_quietly(conn)
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
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
                unlock(conn, session.lock)
        close_quietly(conn)
