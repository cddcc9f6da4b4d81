"""The span writer: reads one span of source time page by page into the entity's
table, and why it is safe to die at any instant.

Pages come through the drift-safe pager (paging.py), one page ahead in a worker
thread (prefetch.py), which also builds the rows and prepares them for writing (one
per key, as COPY text: `EntityStore.prepare`), so the writer only talks to
PostgreSQL. Each page is upserted, and committed only once the next one arrives, so
the last page commits in the same transaction as the span's commit hook
(`OnCommit`): the incremental watermark, or a preload chunk's progress. A crash
leaves either the old mark (the span is read again; upserts are idempotent) or the
new one with all of its data.

A lost database connection is retried with a new connection (the lock taken again,
the span read again); a deadlock likewise; a data error in a row rejects that row
only; a source failure ends the run with the mark where the last span left it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import structlog
from psycopg2.extensions import cursor as Cursor

from syncd.config.model import Config, Entity
from syncd.db.connection import (
    close_quietly,
    describe_db_error,
    is_connection_error,
    is_transient,
    rollback_quietly,
)
from syncd.db.rows import Reject, Row
from syncd.db.runlog import SyncLog
from syncd.db.store import EntityStore, Prepared
from syncd.errors import SourceStopped
from syncd.metrics import Metrics
from syncd.sync.locking import LockedSession, RunLocks
from syncd.sync.paging import WindowReader
from syncd.sync.prefetch import Prefetched
from syncd.sync.records import RowBuilder
from syncd.sync.results import RunResult
from syncd.sync.source import SourceClient
from syncd.sync.spans import Span
from syncd.sync.windows import SourceTime

log = structlog.get_logger("syncd.sync.span_writer")

DB_ATTEMPTS = 4  # tries of one span when the database connection is lost
DB_BACKOFF = 1.0  # seconds, doubled after each lost connection

# Called in the transaction of a span's last page, once the span was read whole.
OnCommit = Callable[[Cursor], None]
# Told after each page commits: how many records it brought.
OnPage = Callable[[int], None]


@dataclass
class Batch:
    """One page, converted: rows ready to write, records that cannot be stored."""

    prepared: Prepared  # one row per key, and its COPY text (EntityStore.prepare)
    rejects: list[Reject] = field(default_factory=list)  # grows with rows PostgreSQL refused
    fetched: int = 0  # records received
    written: int = 0  # set once upserted


class SpanWriter:
    """Reads spans of an entity's source into its table, for runs of every kind."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        client: SourceClient,
        run_log: SyncLog,
        locks: RunLocks,
        *,
        sleep: Callable[[float], None],
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.client = client
        self.run_log = run_log
        self.locks = locks
        self.sleep = sleep
        self.stop = stop

    def write(
        self,
        session: LockedSession,
        entity: Entity,
        result: RunResult,
        span: Span,
        on_commit: OnCommit,
        on_page: OnPage | None = None,
    ) -> bool:
        """Read and commit `span`; on a lost connection or a deadlock, wait and read it
        again. Whether it was read whole (False: stopped early, `on_commit` did not
        run). `session.conn` is the connection in use afterwards."""
        delay = DB_BACKOFF
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                if session.conn.closed:
                    self.locks.reconnect(session)
                return self._write_once(session, entity, result, span, on_commit, on_page)
            except psycopg2.Error as exc:
                lost = is_connection_error(exc)
                if not (lost or is_transient(exc)) or attempt == DB_ATTEMPTS:
                    raise
                event = "sync.db_connection_lost" if lost else "sync.db_conflict_retry"
                log.warning(event, error=describe_db_error(exc), retry_in=delay)
                if lost:
                    close_quietly(session.conn)
                else:  # a deadlock: the connection is fine, its transaction is not
                    rollback_quietly(session.conn)
            self.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _write_once(
        self,
        session: LockedSession,
        entity: Entity,
        result: RunResult,
        span: Span,
        on_commit: OnCommit,
        on_page: OnPage | None,
    ) -> bool:
        conn = session.conn
        source_time = SourceTime.of(entity)
        from_text, to_text = source_time.format(span.start), source_time.format(span.end)
        reader = WindowReader(
            lambda offset, limit: self.client.fetch_page(entity, from_text, to_text, offset, limit),
            entity.source.page_size,
        )
        builder = RowBuilder(entity)
        store = EntityStore(entity, self.config.database.schema)

        def batches() -> Iterator[Batch]:
            try:
                for records in reader.batches(self.stop.is_set):
                    pairs: list[tuple[Any, Row]] = []
                    rejects: list[Reject] = []
                    for record in records:
                        row = builder.build(record)
                        if isinstance(row, Reject):
                            rejects.append(row)
                        else:
                            pairs.append((record, row))
                    yield Batch(store.prepare(pairs), rejects, fetched=len(records))
            except SourceStopped:
                return  # a stop cut the request: the pages before it still commit

        run_id = result.run_id
        assert run_id is not None

        def write(cur: Cursor, batch: Batch) -> None:
            upserted = store.write(cur, batch.prepared)
            batch.written = upserted.written
            batch.rejects.extend(upserted.rejects)
            self.run_log.add_rejects(cur, entity.name, run_id, batch.rejects)
            self.run_log.add_counts(cur, run_id, batch.fetched, batch.written, len(batch.rejects))

        def committed(batch: Batch) -> None:
            self._count(entity, result, batch)
            if on_page is not None:
                on_page(batch.fetched)

        # A page is written only once the next one has arrived (or the span ended),
        # and committed at once: the last page then commits with `on_commit`, and no
        # transaction (nor its row locks) stays open while the source is asked for
        # the next page. The prefetcher keeps fetching ahead meanwhile.
        held: Batch | None = None  # arrived, not yet written
        with Prefetched(batches, name=f"fetch-{entity.name}") as pages, conn.cursor() as cur:
            for batch in pages:
                if held is not None:
                    write(cur, held)
                    conn.commit()
                    committed(held)
                held = batch
            if held is not None:
                write(cur, held)
            if reader.complete:
                on_commit(cur)
            conn.commit()
        if held is not None:
            committed(held)
        log.debug(
            "sync.piece_done",
            window_from=from_text,
            window_to=to_text,
            requests=reader.requests,
            rereads=reader.rereads,
            complete=reader.complete,
        )
        return reader.complete

    def _count(self, entity: Entity, result: RunResult, batch: Batch) -> None:
        """Count a page once its transaction committed, never before."""
        result.fetched += batch.fetched
        result.written += batch.written
        result.rejected += len(batch.rejects)
        self.metrics.fetched.labels(entity=entity.name).inc(batch.fetched)
        self.metrics.written.labels(entity=entity.name).inc(batch.written)
        self.metrics.rejected.labels(entity=entity.name).inc(len(batch.rejects))
