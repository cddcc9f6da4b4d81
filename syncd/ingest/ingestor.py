"""Push ingest: records POSTed to syncd, stored like synced ones (CONTRACT §6, §9).

One request is one `sync_time` run of kind `ingest`. Its records take the sync path:
`RowBuilder` (a bad record is rejected with its reason), then `EntityStore.upsert`
(the version guard: a push never replaces a newer row; a row PostgreSQL refuses is
rejected alone). Rows, rejects, counts and the run's `ok` commit in one transaction,
so a push lands whole or not at all. The `running` row commits first, on its own, so
a long push shows in `sync_time` while it runs.

The database side of a request:

* a connection from a small pool; all in use: 503 "busy, retry", nothing written;
* rows go in primary-key order, in batches of `BATCH_ROWS`, so concurrent pushes
  take row locks in one order and do not deadlock each other;
* a deadlock or serialization failure (against a sync, say): the whole transaction
  again, up to `CONFLICT_RETRIES` more times, then 503;
* a lost connection: the whole transaction again once, on a new connection, then 503;
* a row held by another writer for longer than `LOCK_TIMEOUT`: 503;
* any other database error: 500 with one line (the server's message, never SQL).

A run that fails after its `sync_time` row exists is marked `failed` with the error.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog

from syncd.config.model import Config, Database, Entity
from syncd.db.connection import (
    Connection,
    close_quietly,
    connect,
    describe_db_error,
    is_connection_error,
    is_transient,
    rollback_quietly,
)
from syncd.db.rows import Reject, Row
from syncd.db.runlog import SyncLog
from syncd.db.schema import PendingMigration
from syncd.db.store import EntityStore
from syncd.errors import SyncdError
from syncd.http.server import PostHandler
from syncd.metrics import Metrics
from syncd.runs import RunKind
from syncd.sync import jsonrecords
from syncd.sync.jsonrecords import records_in
from syncd.sync.records import RowBuilder

log = structlog.get_logger("syncd.ingest.ingestor")

INGEST_ROUTE = "/v1/ingest/{entity}"
BATCH_ROWS = 5000  # rows per upsert, all in the request's one transaction
CONFLICT_RETRIES = 3  # more tries after a deadlock or a serialization failure
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
LOCK_TIMEOUT = "15s"  # the longest a push waits for a row another writer holds
APPLICATION_NAME = "syncd-ingest"


class IngestError(Exception):
    """A push that was not stored: `status` is the HTTP answer, `str()` its one line."""

    status = 500

    def __init__(self, message: str, run_id: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id

    def answer(self) -> dict[str, Any]:
        return _with_run_id({"error": str(self)}, self.run_id)


class BadBody(IngestError):
    status = 400


class UnknownEntity(IngestError):
    status = 404


class Busy(IngestError):
    """Nothing stored; the same push can be sent again later."""

    status = 503


@dataclass(frozen=True)
class IngestResult:
    run_id: int | None  # None for an empty push: no run at all
    written: int  # valid records accepted: inserted, updated or already as stored
    rejected: int  # records sent to sync_rejects
    changed: int  # rows really inserted or changed (what the metrics count)

    def answer(self) -> dict[str, Any]:
        return _with_run_id({"written": self.written, "rejected": self.rejected}, self.run_id)


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
        self.log = SyncLog(config.database.schema)
        self._pool = _Pool(config.database, max_connections)
        self._builders = {name: RowBuilder(entity) for name, entity in config.entities.items()}
        self._stores = {
            name: EntityStore(entity, config.database.schema)
            for name, entity in config.entities.items()
        }

    def routes(self) -> dict[str, PostHandler]:
        """`/v1/ingest/{entity}`, and each entity's `ingest_path` bound to that entity."""
        return {
            path: self._handle if name is None else self._bound(name)
            for path, name in ingest_paths(self.config).items()
        }

    def close(self) -> None:
        """Close the idle connections now; those in use close as their pushes end."""
        self._pool.close()

    # -- HTTP -------------------------------------------------------------------------

    def _bound(self, name: str) -> PostHandler:
        return lambda _entity, body: self._handle(name, body)

    def _handle(self, entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            name = self._entity(entity).name  # 404 before reading the body
            result = self.ingest(name, parse_records(body))
        except IngestError as exc:
            return exc.status, exc.answer()
        return 200, result.answer()

    # -- the core ---------------------------------------------------------------------

    def ingest(self, entity: str, records: list[Any]) -> IngestResult:
        """Store `records` for `entity`: one transaction, one `sync_time` run.

        Raises UnknownEntity, Busy (nothing stored, send again) or IngestError."""
        spec = self._entity(entity)
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
                    self._count(entity, "failed", started)
                log.error("ingest.failed", error=str(exc), records=prepared.received)
                raise
            result = IngestResult(
                run.id,
                written=prepared.valid - refused,
                rejected=len(prepared.rejects) + refused,
                changed=changed,
            )
            self._count(entity, "ok", started, result)
            log.info(
                "ingest.finished",
                records=prepared.received,
                written=result.written,
                changed=result.changed,
                rejected=result.rejected,
                seconds=round(time.monotonic() - started, 3),
            )
        return result

    def _entity(self, name: str | None) -> Entity:
        entity = self.config.entities.get(name or "")
        if entity is None:
            raise UnknownEntity(f"unknown entity {name!r}")
        return entity

    def _prepare(self, entity: Entity, records: list[Any]) -> _Prepared:
        builder, store = self._builders[entity.name], self._stores[entity.name]
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
                        run.id = self.log.start_run(conn, entity.name, RunKind.INGEST, None, None)
                        structlog.contextvars.bind_contextvars(run_id=run.id)
                    return self._transaction(conn, entity, prepared, run.id)
                except psycopg2.Error as exc:
                    rollback_quietly(conn)
                    if is_connection_error(exc) and not lost:
                        lost += 1
                        conn = self._reconnect(conn, run)
                    elif is_transient(exc) and conflicts < CONFLICT_RETRIES:
                        conflicts += 1
                        time.sleep(random.uniform(0.01, 0.05) * conflicts)  # let the other finish
                    else:
                        raise self._failed(conn, run.id, exc) from exc
                    log.warning("ingest.retry", reason=describe_db_error(exc))
                except Exception as exc:  # a bug: answer 500 and mark the run, keep serving
                    log.exception("ingest.crashed")
                    rollback_quietly(conn)
                    raise self._failed(conn, run.id, exc) from exc
        finally:
            self._pool.release(conn)

    def _transaction(
        self, conn: Connection, entity: Entity, prepared: _Prepared, run_id: int
    ) -> tuple[int, int]:
        store = self._stores[entity.name]
        changed = 0
        rejects = list(prepared.rejects)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
            for start in range(0, len(prepared.pairs), BATCH_ROWS):
                upserted = store.upsert(cur, prepared.pairs[start : start + BATCH_ROWS])
                changed += upserted.written
                rejects.extend(upserted.rejects)
            self.log.add_rejects(cur, entity.name, run_id, rejects)
            self.log.add_counts(cur, run_id, prepared.received, changed, len(rejects))
        # finish_run's UPDATE joins the open transaction and its commit commits it all:
        # rows, rejects, counts and `ok` land together or not at all.
        self.log.finish_run(conn, run_id, None)
        return changed, len(rejects) - len(prepared.rejects)

    def _reconnect(self, conn: Connection, run: _Run) -> Connection:
        """The connection was lost: a new one in its place (the idle ones go too)."""
        try:
            return self._pool.replace(conn)
        except psycopg2.Error as exc:
            raise self._failed(conn, run.id, exc) from exc

    def _failed(self, conn: Connection, run_id: int | None, exc: Exception) -> IngestError:
        """The error to answer with, once the run (if any) is marked failed with it."""
        failure: IngestError
        if isinstance(exc, SyncdError):  # a pending migration the table cannot take
            failure = IngestError(str(exc), run_id)
        elif not isinstance(exc, psycopg2.Error):
            failure = IngestError(f"internal error: {type(exc).__name__}", run_id)
        elif is_connection_error(exc):
            failure = Busy(f"database unavailable: {describe_db_error(exc)}", run_id)
        elif is_transient(exc) or exc.pgcode == LOCK_NOT_AVAILABLE:
            failure = Busy(f"rows held by another writer, retry: {describe_db_error(exc)}", run_id)
        else:
            failure = IngestError(f"database error: {describe_db_error(exc)}", run_id)
        if run_id is not None:
            self._mark_failed(conn, run_id, str(failure))
        return failure

    def _mark_failed(self, conn: Connection, run_id: int, error: str) -> None:
        try:
            if conn.closed:
                with contextlib.closing(self._pool.connect()) as fresh:
                    self.log.finish_run(fresh, run_id, error)
            else:
                self.log.finish_run(conn, run_id, error)
        except psycopg2.Error as exc:
            log.error("ingest.failure_unrecorded", error=describe_db_error(exc))

    def _count(
        self, entity: str, status: str, started: float, result: IngestResult | None = None
    ) -> None:
        self.metrics.runs.labels(entity=entity, kind="ingest", status=status).inc()
        self.metrics.duration.labels(entity=entity, kind="ingest").observe(
            time.monotonic() - started
        )
        if result is not None:
            self.metrics.written.labels(entity=entity).inc(result.changed)
            self.metrics.rejected.labels(entity=entity).inc(result.rejected)


def ingest_paths(config: Config) -> dict[str, str | None]:
    """Every push path: the general one (None: the entity is in the path) and each
    entity's own `ingest_path`."""
    paths: dict[str, str | None] = {INGEST_ROUTE: None}
    for name, entity in config.entities.items():
        if entity.ingest_path is not None:
            paths[entity.ingest_path] = name
    return paths


class _Pool:
    """At most `size` connections in use; idle ones are kept for the next push.

    Connections come from `syncd.db.connection.connect` (password, keepalives, UTC), only when
    needed and outside the lock. `acquire` never waits: None means all are in use."""

    def __init__(self, database: Database, size: int) -> None:
        self._database = database
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False

    def connect(self) -> Connection:
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
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)


def _with_run_id(body: dict[str, Any], run_id: int | None) -> dict[str, Any]:
    return body if run_id is None else {**body, "run_id": run_id}


# -- the body -------------------------------------------------------------------------


def parse_records(body: bytes) -> list[Any]:
    """The JSON array of records in a request body; BadBody (400) says what is wrong.
    A record the decoder cannot read alone is one reject, not a 400 (jsonrecords)."""
    try:
        return records_in(body, constants=False)
    except jsonrecords.BadBody as exc:
        raise BadBody(str(exc)) from None
