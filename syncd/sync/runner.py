"""What every kind of pull run shares: a connection holding a lock, the `sync_time`
row, and reading one piece of time from the source into the entity's table.

Reading a piece, and why it is safe to die at any instant: pages come through the
drift-safe pager (paging.py), one page ahead in a worker thread (prefetch.py); each
page is upserted, and committed only once the next one arrives, so the last page
commits in the same transaction as the piece's *mark* — the incremental watermark,
or a preload's progress. A crash leaves either the old mark (the piece is read
again; upserts are idempotent) or the new one with all of its data.

A lost database connection is retried with a new connection (the lock taken again,
the piece read again); a deadlock likewise; a data error in a row rejects that row
only; a source failure ends the run with the mark where the last piece left it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2
import structlog
from psycopg2.extensions import cursor as Cursor

from syncd.config.model import Config, Entity
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
from syncd.errors import SourceStopped, SyncdError
from syncd.metrics import Metrics
from syncd.sync.paging import WindowReader
from syncd.sync.prefetch import Prefetched
from syncd.sync.records import RowBuilder
from syncd.sync.source import SourceClient
from syncd.sync.windows import Piece, SourceTime

log = structlog.get_logger("syncd.sync.incremental")

DB_ATTEMPTS = 4  # tries of one piece when the database connection is lost
DB_BACKOFF = 1.0  # seconds, doubled after each lost connection

# Called in the transaction of a piece's last page, once the piece was read whole.
Mark = Callable[[Cursor], None]


@dataclass
class RunResult:
    entity: str
    status: str  # ok, failed, skipped
    kind: str = "incremental"
    run_id: int | None = None
    fetched: int = 0
    written: int = 0
    rejected: int = 0
    watermark: datetime | None = None  # incremental: the committed watermark
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Batch:
    """One page, converted: rows ready to write, records that cannot be stored."""

    pairs: list[tuple[Any, Row]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)  # grows with rows PostgreSQL refused
    fetched: int = 0  # records received, set once converted
    written: int = 0  # set once upserted


class Unrecorded:
    """Ends of runs that could not be written to `sync_time` (the database was gone
    for longer than the reconnect tries). The entity's next run of the same kind
    writes them, so the run keeps its real error instead of being called interrupted.
    Shared by the runners of one process (a reload passes it on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: dict[int, tuple[str, str, str | None]] = {}  # id -> entity, kind, error

    def remember(self, result: RunResult) -> None:
        assert result.run_id is not None
        with self._lock:
            self._ends[result.run_id] = (result.entity, result.kind, result.error)

    def of(self, entity: str, kind: str) -> dict[int, str | None]:
        """run id -> its error (None: it succeeded), for runs of `entity` and `kind`."""
        with self._lock:
            return {
                run_id: error
                for run_id, (name, run_kind, error) in self._ends.items()
                if (name, run_kind) == (entity, kind)
            }

    def forget(self, run_ids: Iterable[int]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._ends.pop(run_id, None)

    def close_interrupted(self, log: SyncLog, conn: Connection, entity: str, kind: str) -> int:
        """Write the ends kept for `entity` and `kind`, then mark its other `running`
        rows interrupted (SyncLog.close_interrupted); returns how many of those."""
        ends = self.of(entity, kind)
        count = log.close_interrupted(conn, entity, kind, ends)
        self.forget(ends)
        return count


class LostLock(SyncdError):
    """After a reconnect another instance holds the lock: this run must end."""


class EntityRunner:
    """The shared machinery. Side effects come in through the constructor."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        client: SourceClient | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        migration: PendingMigration | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> None:
        self.config = config
        self.unrecorded = unrecorded or Unrecorded()
        self.migration = migration  # done by the first run that reaches the database
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

    def source_time(self, entity: Entity) -> SourceTime:
        return SourceTime(entity.source.time_format, entity.source.timezone)

    def open_locked(self, lock: str, entity: str) -> tuple[Connection | None, str | None]:
        """A new connection holding the advisory lock `lock`, or why there is none:
        (None, None) when another instance holds the lock (the run is skipped),
        (None, error) when the database cannot be reached."""
        try:
            conn = self.connect()
        except psycopg2.Error as exc:
            return None, f"cannot connect to the database: {describe_db_error(exc)}"
        try:
            if self.log.try_lock(conn, lock):
                if self.migration is not None:
                    self.migration.ensure(conn, entity)
                return conn, None
        except psycopg2.Error as exc:
            self.release(conn, lock)
            return None, f"database: {describe_db_error(exc)}"
        except SyncdError as exc:  # the table cannot take the configuration's columns
            self.release(conn, lock)
            return None, str(exc)
        close_quietly(conn)
        log.info("sync.skipped", lock=lock, reason="another instance holds the lock")
        return None, None

    def release(self, conn: Connection, lock: str) -> None:
        """Unlock, then close. PostgreSQL frees a session's locks only once its backend
        has exited, a moment after the client hung up: without the explicit unlock,
        the next run of the entity could find its own lock still held and skip."""
        if not conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
                self.log.unlock(conn, lock)
        close_quietly(conn)

    # -- the run's sync_time row -----------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def recording_errors(result: RunResult) -> Iterator[None]:
        """Whatever ends a run early becomes its one-line error (for `sync_time`, the
        log and the command line); a bug is logged with its traceback but never takes
        the process down."""
        try:
            yield
        except SyncdError as exc:
            result.error = str(exc)
        except psycopg2.Error as exc:
            result.error = f"database: {describe_db_error(exc)}"
        except Exception as exc:
            log.exception("sync.crashed")
            result.error = f"internal error: {type(exc).__name__}: {exc}"

    def finish(self, conn: Connection, result: RunResult) -> Connection:
        """Record the run's end; the connection may be the one that broke. If the
        database cannot be reached, the end is kept for the entity's next run to
        record (see Unrecorded)."""
        assert result.run_id is not None
        result.status = "failed" if result.error else "ok"
        reason = ""
        for _ in range(2):
            try:
                if conn.closed:
                    conn = self.connect()
                conn.rollback()
                self.log.finish_run(conn, result.run_id, result.error)
                break
            except psycopg2.Error as exc:
                close_quietly(conn)
                reason = describe_db_error(exc)
        else:
            log.error("sync.finish_unrecorded", error=reason)
            self.unrecorded.remember(result)
        event = log.info if result.status == "ok" else log.error
        event(
            "sync.finished",
            kind=result.kind,
            status=result.status,
            fetched=result.fetched,
            written=result.written,
            rejected=result.rejected,
            error=result.error,
        )
        return conn

    def count_run(self, result: RunResult) -> None:
        name = result.entity
        if result.status == "skipped":
            self.metrics.skipped.labels(entity=name).inc()
            return
        self.metrics.runs.labels(entity=name, kind=result.kind, status=result.status).inc()
        self.metrics.duration.labels(entity=name, kind=result.kind).observe(result.seconds)

    # -- one piece -------------------------------------------------------------------

    def read_piece(
        self,
        conn: Connection,
        lock: str,
        entity: Entity,
        result: RunResult,
        piece: Piece,
        mark: Mark,
    ) -> tuple[Connection, bool]:
        """Read and commit one piece; on a lost connection or a deadlock, wait and
        read it again. Returns the connection now in use and whether the piece was
        read whole (False: stopped early; its mark was not committed)."""
        delay = DB_BACKOFF
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                if conn.closed:
                    conn = self._reconnect(lock)
                return conn, self._read_piece(conn, entity, result, piece, mark)
            except psycopg2.Error as exc:
                lost = is_connection_error(exc)
                if not (lost or is_transient(exc)) or attempt == DB_ATTEMPTS:
                    raise
                event = "sync.db_connection_lost" if lost else "sync.db_conflict_retry"
                log.warning(event, error=describe_db_error(exc), retry_in=delay)
                if lost:
                    close_quietly(conn)
                else:  # a deadlock: the connection is fine, its transaction is not
                    rollback_quietly(conn)
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _reconnect(self, lock: str) -> Connection:
        conn = self.connect()
        # The lock went with the old connection; another instance may have it now.
        if not self.log.try_lock(conn, lock):
            close_quietly(conn)
            raise LostLock("another instance took the lock during a reconnect")
        return conn

    def _read_piece(
        self, conn: Connection, entity: Entity, result: RunResult, piece: Piece, mark: Mark
    ) -> bool:
        source_time = self.source_time(entity)
        from_text, to_text = source_time.format(piece.start), source_time.format(piece.end)
        reader = WindowReader(
            lambda offset, limit: self.client.fetch_page(entity, from_text, to_text, offset, limit),
            entity.source.page_size,
        )
        builder = RowBuilder(entity)
        store = EntityStore(entity, self.config.database.schema)

        def batches() -> Iterator[Batch]:
            try:
                for records in reader.batches(self.stop.is_set):
                    batch = Batch(fetched=len(records))
                    for record in records:
                        row = builder.build(record)
                        if isinstance(row, Reject):
                            batch.rejects.append(row)
                        else:
                            batch.pairs.append((record, row))
                    yield batch
            except SourceStopped:
                return  # a stop cut the request: the pages before it still commit

        run_id = result.run_id
        assert run_id is not None

        def write(cur: Cursor, batch: Batch) -> None:
            upserted = store.upsert(cur, batch.pairs)
            batch.written = upserted.written
            batch.rejects.extend(upserted.rejects)
            self.log.add_rejects(cur, entity.name, run_id, batch.rejects)
            self.log.add_counts(cur, run_id, batch.fetched, batch.written, len(batch.rejects))

        # A page is written only once the next one has arrived (or the window ended),
        # and committed at once: the last page then commits with the mark, and no
        # transaction (nor its row locks) stays open while the source is asked for
        # the next page. The prefetcher keeps fetching ahead meanwhile.
        held: Batch | None = None  # arrived, not yet written
        with Prefetched(batches, name=f"fetch-{entity.name}") as pages, conn.cursor() as cur:
            for batch in pages:
                if held is not None:
                    write(cur, held)
                    conn.commit()
                    self._committed(entity, result, held)
                held = batch
            if held is not None:
                write(cur, held)
            if reader.complete:
                mark(cur)
            conn.commit()
        if held is not None:
            self._committed(entity, result, held)
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


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
