"""One incremental run of one entity: source pages into its table, window by window.

The order of a run, and why each step is safe to die in:

1. Take the entity's advisory lock (else: skipped, no `sync_time` row). While held,
   `running` rows of the entity are leftovers of a dead process: mark them failed.
2. Read the watermark; plan `[watermark - lookback, now - lag)` in pieces of at most
   `window.max` (windows.py).
3. Per piece: page through it (paging.py), one page ahead in a worker thread;
   upsert each page; commit a page only once the next one arrives, so the last page
   commits in the same transaction as the watermark. A crash at any instant leaves
   either the old watermark (the piece is re-read: upserts are idempotent) or the
   new one with all of its data.
4. Log the run's end in `sync_time`.

A lost database connection is retried (new connection, lock taken again, piece read
again); a data error in a row rejects that row only; a source failure fails the run
with the watermark where the last complete piece left it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2
import structlog

from syncd.config import Config, Entity
from syncd.db import Connection, connect, describe_db_error, is_connection_error
from syncd.errors import SyncdError
from syncd.metrics import Metrics
from syncd.paging import WindowReader
from syncd.prefetch import Prefetched
from syncd.records import Reject, Row, RowBuilder
from syncd.source import SourceClient
from syncd.store import EntityStore
from syncd.synclog import SyncLog
from syncd.windows import Piece, SourceTime, plan_pieces

log = structlog.get_logger("syncd.engine")

DB_ATTEMPTS = 4  # tries of one piece when the database connection is lost
DB_BACKOFF = 1.0  # seconds, doubled after each lost connection


@dataclass
class RunResult:
    entity: str
    status: str  # ok, failed, skipped
    run_id: int | None = None
    fetched: int = 0
    written: int = 0
    rejected: int = 0
    watermark: datetime | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Batch:
    """One page, converted: rows ready to write, records that cannot be stored."""

    pairs: list[tuple[Any, Row]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    written: int = 0  # set once upserted

    @property
    def fetched(self) -> int:
        return len(self.pairs) + len(self.rejects)


class LostLock(SyncdError):
    """After a reconnect another instance holds the entity's lock: this run must end."""


class Engine:
    """Runs incremental syncs. Side effects come in through the constructor."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        client: SourceClient | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.now = now
        self.sleep = sleep
        self.stop = stop or threading.Event()
        # Retry waits end early when the daemon is stopping.
        self.client = client or SourceClient(
            observe=metrics.observe_request,
            sleep=self.stop.wait,
            should_stop=self.stop.is_set,
        )
        self.log = SyncLog(config.database.schema)

    def connect(self) -> Connection:
        return connect(self.config.database)

    # -- many entities ------------------------------------------------------------

    def sync_many(self, names: list[str]) -> list[RunResult]:
        """One pass over `names`, up to `scheduler.max_concurrent` at once."""
        workers = max(1, min(self.config.scheduler.max_concurrent, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
            return list(pool.map(self.sync_entity, names))

    # -- one entity ---------------------------------------------------------------

    def sync_entity(self, name: str) -> RunResult:
        entity = self.config.entities[name]
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(entity=name):
            result = self._locked_run(entity)
        result.seconds = time.monotonic() - started
        self._count_run(result)
        return result

    def _count_run(self, result: RunResult) -> None:
        name = result.entity
        if result.status == "skipped":
            self.metrics.skipped.labels(entity=name).inc()
            return
        self.metrics.runs.labels(entity=name, kind="incremental", status=result.status).inc()
        self.metrics.duration.labels(entity=name, kind="incremental").observe(result.seconds)
        if result.status == "ok":
            self.metrics.last_success.labels(entity=name).set(time.time())

    def _locked_run(self, entity: Entity) -> RunResult:
        result = RunResult(entity.name, "failed")
        try:
            conn = self.connect()
        except psycopg2.Error as exc:
            result.error = f"cannot connect to the database: {describe_db_error(exc)}"
            log.error("sync.failed", error=result.error)
            return result
        try:
            if not self.log.try_lock(conn, entity.name):
                log.info("sync.skipped", reason="another instance holds the entity's lock")
                result.status = "skipped"
                return result
            conn = self._run(conn, entity, result)
            return result
        finally:
            _close_quietly(conn)

    def _run(self, conn: Connection, entity: Entity, result: RunResult) -> Connection:
        """The run proper, lock held. Returns the connection in use at the end."""
        source_time = SourceTime(entity.source.time_format, entity.source.timezone)
        try:
            interrupted = self.log.close_interrupted(conn, entity.name)
            if interrupted:
                log.warning("sync.interrupted_runs_closed", count=interrupted)
            stored = self._stored_watermark(conn, entity, source_time)
            start = stored if stored is not None else entity.window.initial_from
            assert start is not None  # the loader requires initial_from without preload
            pieces = plan_pieces(start, self.now(), entity.window, source_time)
            window_from = pieces[0].start if pieces else None
            window_to = pieces[-1].end if pieces else None
            result.run_id = self.log.start_run(
                conn, entity.name, "incremental", window_from, window_to
            )
        except psycopg2.Error as exc:
            result.error = f"database: {describe_db_error(exc)}"
            log.error("sync.failed", error=result.error)
            return conn
        result.watermark = stored
        with structlog.contextvars.bound_contextvars(run_id=result.run_id):
            log.info("sync.started", window_from=_iso(window_from), window_to=_iso(window_to))
            try:
                for piece in pieces:
                    conn, complete = self._piece_with_retries(
                        conn, entity, result, piece, source_time
                    )
                    if not complete:
                        raise SyncdError("stopped before the window was complete")
            except SyncdError as exc:
                result.error = str(exc)
            except psycopg2.Error as exc:
                result.error = f"database: {describe_db_error(exc)}"
            except Exception as exc:  # a bug: record it, never take the process down
                log.exception("sync.crashed")
                result.error = f"internal error: {type(exc).__name__}: {exc}"
            result.status = "failed" if result.error else "ok"
            conn = self._finish(conn, result)
        return conn

    def _finish(self, conn: Connection, result: RunResult) -> Connection:
        assert result.run_id is not None
        for _ in range(2):  # the connection may be the one that broke
            try:
                conn.rollback()
                self.log.finish_run(conn, result.run_id, result.error)
                break
            except psycopg2.Error:
                _close_quietly(conn)
                try:
                    conn = self.connect()
                except psycopg2.Error as exc:
                    log.error("sync.finish_unrecorded", error=describe_db_error(exc))
                    break
        event = log.info if result.status == "ok" else log.error
        event(
            "sync.finished",
            status=result.status,
            fetched=result.fetched,
            written=result.written,
            rejected=result.rejected,
            watermark=_iso(result.watermark),
            error=result.error,
        )
        return conn

    def _stored_watermark(
        self, conn: Connection, entity: Entity, source_time: SourceTime
    ) -> datetime | None:
        """The committed watermark, creating the entity's state on its first run."""
        with conn.cursor() as cur:
            watermark = self.log.watermark(cur, entity.name)
            if watermark is None and entity.preload.enabled:
                # CONTRACT §9: fix the preload's end E once; incremental starts at E.
                end = source_time.truncate(self.now())
                self.log.start_state(cur, entity.name, end, end)
                watermark = self.log.watermark(cur, entity.name)
        conn.commit()
        return watermark

    def _piece_with_retries(
        self,
        conn: Connection,
        entity: Entity,
        result: RunResult,
        piece: Piece,
        source_time: SourceTime,
    ) -> tuple[Connection, bool]:
        """Read and commit one piece; on a lost connection, wait and read it again.

        Returns the connection now in use and whether the piece was read whole."""
        delay = DB_BACKOFF
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                if conn.closed:
                    conn = self._reconnect(entity)
                return conn, self._piece(conn, entity, result, piece, source_time)
            except psycopg2.Error as exc:
                if not is_connection_error(exc) or attempt == DB_ATTEMPTS:
                    raise
                log.warning("sync.db_connection_lost", error=describe_db_error(exc), retry_in=delay)
            _close_quietly(conn)
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _reconnect(self, entity: Entity) -> Connection:
        conn = self.connect()
        # The lock went with the old connection; another instance may have it now.
        if not self.log.try_lock(conn, entity.name):
            _close_quietly(conn)
            raise LostLock("another instance took the entity's lock during a reconnect")
        return conn

    def _piece(
        self,
        conn: Connection,
        entity: Entity,
        result: RunResult,
        piece: Piece,
        source_time: SourceTime,
    ) -> bool:
        from_text, to_text = source_time.format(piece.start), source_time.format(piece.end)
        reader = WindowReader(
            lambda offset, limit: self.client.fetch_page(entity, from_text, to_text, offset, limit),
            entity.source.page_size,
        )
        builder = RowBuilder(entity)
        store = EntityStore(entity, self.config.database.schema)

        def batches() -> Iterator[Batch]:
            for records in reader.batches(self.stop.is_set):
                batch = Batch()
                for record in records:
                    row = builder.build(record)
                    if isinstance(row, Reject):
                        batch.rejects.append(row)
                    else:
                        batch.pairs.append((record, row))
                yield batch

        assert result.run_id is not None
        pending: Batch | None = None  # written, not yet committed
        with Prefetched(batches, name=f"fetch-{entity.name}") as pages, conn.cursor() as cur:
            for batch in pages:
                if pending is not None:
                    # Another page follows, so the previous one is not the last: commit it.
                    conn.commit()
                    self._committed(entity, result, pending)
                upserted = store.upsert(cur, batch.pairs)
                batch.written = upserted.written
                batch.rejects.extend(upserted.rejects)
                self.log.add_rejects(cur, entity.name, result.run_id, batch.rejects)
                self.log.add_counts(
                    cur, result.run_id, batch.fetched, batch.written, len(batch.rejects)
                )
                pending = batch
            if reader.complete:
                self.log.set_watermark(cur, entity.name, piece.end)
            conn.commit()
        if pending is not None:
            self._committed(entity, result, pending)
        if reader.complete:
            result.watermark = piece.end
            self.metrics.watermark.labels(entity=entity.name).set(piece.end.timestamp())
        log.debug(
            "sync.piece_done",
            window_from=from_text,
            window_to=to_text,
            requests=reader.requests,
            rereads=reader.rereads,
            complete=reader.complete,
        )
        return reader.complete

    def _committed(self, entity: Entity, result: RunResult, batch: Batch) -> None:
        """Count a page once its transaction committed, never before."""
        result.fetched += batch.fetched
        result.written += batch.written
        result.rejected += len(batch.rejects)
        self.metrics.fetched.labels(entity=entity.name).inc(batch.fetched)
        self.metrics.written.labels(entity=entity.name).inc(batch.written)
        self.metrics.rejected.labels(entity=entity.name).inc(len(batch.rejects))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.close()
