"""Push ingest: records POSTed to syncd, stored like synced ones (docs/operations.md,
"Push ingest").

One push is one `sync_time` run of kind `ingest`. Its records take the sync path:
`RowBuilder` (a bad record is rejected with its reason), then `EntityStore.upsert`
(the version guard: a push never replaces a newer row; a row PostgreSQL refuses is
rejected alone). Rows, rejects, counts and the run's `ok` commit in one transaction,
so a push lands whole or not at all. The `running` row commits first, on its own, so
a long push shows in `sync_time` while it runs.

The database side of a push:

* a connection from a small pool (`syncd.ingest.pool`); all in use: Busy, nothing
  written;
* rows go in primary-key order, in batches of `BATCH_ROWS`, so concurrent pushes
  take row locks in one order and do not deadlock each other;
* a deadlock or serialization failure (against a sync, say): the whole transaction
  again, up to `CONFLICT_RETRIES` more times, then Busy;
* a lost connection: the whole transaction again once, on a new connection, then Busy;
* a row held by another writer for longer than `LOCK_TIMEOUT`: Busy;
* any other database error: IngestError with one line (the server's message, never SQL).

A run that fails after its `sync_time` row exists is marked `failed` with the error.
This package knows nothing of HTTP; `syncd.service.ingest_routes` serves it.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import structlog
from psycopg2.errors import DeadlockDetected, LockNotAvailable, SerializationFailure

from syncd.config.model import Config, Entity
from syncd.db.connection import (
    Connection,
    describe_db_error,
    is_connection_error,
    rollback_quietly,
)
from syncd.db.rows import Reject, Row
from syncd.db.runlog import SyncLog
from syncd.db.schema import PendingMigration
from syncd.db.store import EntityStore
from syncd.errors import SyncdError
from syncd.ingest.errors import Busy, IngestError, UnknownEntity
from syncd.ingest.pool import ConnectionPool
from syncd.metrics import Metrics
from syncd.runs import RunKind, RunStatus
from syncd.sync.records import RowBuilder

log = structlog.get_logger("syncd.ingest.ingestor")

BATCH_ROWS = 5000  # rows per upsert, all in the push's one transaction
CONFLICT_RETRIES = 3  # more tries after a deadlock or a serialization failure
CONFLICTS = (DeadlockDetected, SerializationFailure)  # the same transaction again can succeed
LOCK_TIMEOUT = "15s"  # the longest a push waits for a row another writer holds


@dataclass(frozen=True)
class IngestResult:
    run_id: int | None  # None for an empty push: no run at all
    written: int  # valid records accepted: inserted, updated or already as stored
    rejected: int  # records sent to sync_rejects
    changed: int  # rows really inserted or changed (what the metrics count)


@dataclass(frozen=True)
class _Prepared:
    """A push converted: one row per key in key order, and the records it cannot store."""

    received: int
    valid: int  # records that became rows, duplicate keys included
    pairs: list[tuple[Any, Row]]
    rejects: list[Reject]


@dataclass
class _Run:
    id: int | None = None  # the sync_time row, once it exists
    counted: bool = False  # it got as far as the database: it counts in the metrics


class Ingestor:
    """Stores pushed records for the entities of one configuration."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        max_connections: int = 4,
        migration: PendingMigration | None = None,
    ) -> None:
        self.config = config
        self.migration = migration  # done by the first push that reaches the database
        self.metrics = metrics
        self.run_log = SyncLog(config.database.schema)  # syncd's tables
        self._pool = ConnectionPool(config.database, max_connections)
        # Built at an entity's first push, not for every entity up front: about 50 KB
        # each, and most entities of a large configuration are never pushed to.
        self._writers: dict[str, tuple[RowBuilder, EntityStore]] = {}

    def close(self) -> None:
        """Close the idle connections now; those in use close as their pushes end."""
        self._pool.close()

    def _writer(self, entity: Entity) -> tuple[RowBuilder, EntityStore]:
        """The row builder and store of `entity`, made at its first push. Two pushes
        racing to make them both build one; either pair works."""
        writer = self._writers.get(entity.name)
        if writer is None:
            writer = (RowBuilder(entity), EntityStore(entity, self.config.database.schema))
            self._writers[entity.name] = writer
        return writer

    def entity(self, name: str | None) -> Entity:
        """The configured entity `name`; UnknownEntity if there is none."""
        entity = self.config.entities.get(name or "")
        if entity is None:
            raise UnknownEntity(f"unknown entity {name!r}")
        return entity

    def ingest(self, entity: str, records: list[Any]) -> IngestResult:
        """Store `records` for `entity`: one transaction, one `sync_time` run.

        Raises UnknownEntity, Busy (nothing stored, send again) or IngestError."""
        spec = self.entity(entity)
        if not records:
            return IngestResult(None, 0, 0, 0)
        started = time.monotonic()
        prepared = self._prepare(spec, records)
        run = _Run()
        with structlog.contextvars.bound_contextvars(entity=entity, run_id=None):
            try:
                changed, refused = self._write(spec, prepared, run)
            except IngestError as exc:
                if run.counted:
                    self._count(entity, RunStatus.FAILED, started)
                log.error("ingest.failed", error=str(exc), records=prepared.received)
                raise
            result = IngestResult(
                run.id,
                written=prepared.valid - refused,
                rejected=len(prepared.rejects) + refused,
                changed=changed,
            )
            self._count(entity, RunStatus.OK, started, result)
            log.info(
                "ingest.finished",
                records=prepared.received,
                written=result.written,
                changed=result.changed,
                rejected=result.rejected,
                seconds=round(time.monotonic() - started, 3),
            )
        return result

    def _prepare(self, entity: Entity, records: list[Any]) -> _Prepared:
        builder, store = self._writer(entity)
        pairs: list[tuple[Any, Row]] = []
        rejects: list[Reject] = []
        for record in records:
            row = builder.build(record)
            if isinstance(row, Reject):
                rejects.append(row)
            else:
                pairs.append((record, row))
        unique = store.dedupe(pairs)  # one row per key: the newest
        # One lock order for every push. (Keys Python cannot order, e.g. jsonb, keep theirs.)
        with contextlib.suppress(TypeError):
            unique.sort(key=lambda pair: store.key_of(pair[1]))
        return _Prepared(len(records), len(pairs), unique, rejects)

    def _write(self, entity: Entity, prepared: _Prepared, run: _Run) -> tuple[int, int]:
        """(rows changed, rows PostgreSQL refused), committed, with the retries of the
        module doc."""
        try:
            conn = self._pool.acquire()
        except psycopg2.Error as exc:
            run.counted = True
            raise Busy(f"database unavailable: {describe_db_error(exc)}") from exc
        if conn is None:
            raise Busy("busy, retry")
        run.counted = True
        lost = conflicts = 0
        try:
            while True:
                try:
                    if self.migration is not None:
                        self.migration.ensure(conn, entity.name)
                    if run.id is None:
                        run.id = self.run_log.start_run(
                            conn, entity.name, RunKind.INGEST, None, None
                        )
                        structlog.contextvars.bind_contextvars(run_id=run.id)
                    return self._transaction(conn, entity, prepared, run.id)
                except psycopg2.Error as exc:
                    rollback_quietly(conn)
                    if is_connection_error(exc) and not lost:
                        lost += 1
                        conn = self._reconnect(conn, run)
                    elif isinstance(exc, CONFLICTS) and conflicts < CONFLICT_RETRIES:
                        conflicts += 1
                        time.sleep(random.uniform(0.01, 0.05) * conflicts)  # let the other finish
                    else:
                        raise self._failed(conn, run.id, exc) from exc
                    log.warning("ingest.retry", reason=describe_db_error(exc))
                except Exception as exc:  # a bug: fail this push and mark the run, keep serving
                    log.exception("ingest.crashed")
                    rollback_quietly(conn)
                    raise self._failed(conn, run.id, exc) from exc
        finally:
            self._pool.release(conn)

    def _transaction(
        self, conn: Connection, entity: Entity, prepared: _Prepared, run_id: int
    ) -> tuple[int, int]:
        _, store = self._writer(entity)
        changed = 0
        rejects = list(prepared.rejects)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
            for start in range(0, len(prepared.pairs), BATCH_ROWS):
                upserted = store.upsert(cur, prepared.pairs[start : start + BATCH_ROWS])
                changed += upserted.written
                rejects.extend(upserted.rejects)
            self.run_log.add_rejects(cur, entity.name, run_id, rejects)
            self.run_log.add_counts(cur, run_id, prepared.received, changed, len(rejects))
        # finish_run's UPDATE joins the open transaction and its commit commits it all:
        # rows, rejects, counts and `ok` land together or not at all.
        self.run_log.finish_run(conn, run_id, None)
        return changed, len(rejects) - len(prepared.rejects)

    def _reconnect(self, conn: Connection, run: _Run) -> Connection:
        """The connection was lost: a new one in its place (the idle ones go too)."""
        try:
            return self._pool.replace(conn)
        except psycopg2.Error as exc:
            raise self._failed(conn, run.id, exc) from exc

    def _failed(self, conn: Connection, run_id: int | None, exc: Exception) -> IngestError:
        """The error to raise, once the run (if any) is marked failed with it."""
        failure = _failure(exc, run_id)
        if run_id is not None:
            self._mark_failed(conn, run_id, str(failure))
        return failure

    def _mark_failed(self, conn: Connection, run_id: int, error: str) -> None:
        try:
            if conn.closed:
                with contextlib.closing(self._pool.connect()) as fresh:
                    self.run_log.finish_run(fresh, run_id, error)
            else:
                self.run_log.finish_run(conn, run_id, error)
        except psycopg2.Error as exc:
            log.error("ingest.failure_unrecorded", error=describe_db_error(exc))

    def _count(
        self, entity: str, status: RunStatus, started: float, result: IngestResult | None = None
    ) -> None:
        self.metrics.runs.labels(entity=entity, kind=RunKind.INGEST, status=status).inc()
        self.metrics.duration.labels(entity=entity, kind=RunKind.INGEST).observe(
            time.monotonic() - started
        )
        if result is not None:
            self.metrics.written.labels(entity=entity).inc(result.changed)
            self.metrics.rejected.labels(entity=entity).inc(result.rejected)


def _failure(exc: Exception, run_id: int | None) -> IngestError:
    """What a push that ended on `exc` tells its client: Busy when the same push may
    succeed later, IngestError otherwise."""
    if isinstance(exc, SyncdError):  # a pending migration the table cannot take
        return IngestError(str(exc), run_id)
    if not isinstance(exc, psycopg2.Error):
        return IngestError(f"internal error: {type(exc).__name__}", run_id)
    if is_connection_error(exc):
        return Busy(f"database unavailable: {describe_db_error(exc)}", run_id)
    if isinstance(exc, (*CONFLICTS, LockNotAvailable)):
        return Busy(f"rows held by another writer, retry: {describe_db_error(exc)}", run_id)
    return IngestError(f"database error: {describe_db_error(exc)}", run_id)
