"""One incremental run of one entity: `[watermark - lookback, now - lag)` into its table.

1. Take the entity's advisory lock (else: skipped as `locked`, no `sync_time` row),
   then claim the turn in the schedule all instances share (db/schedule_state.py;
   else: skipped as `served`). While the lock is held, `running` incremental rows of
   the entity are leftovers of a dead process: mark them failed.
2. Read the watermark (on the very first run of an entity with preload, pin the
   preload's end E and start there); plan the window in pieces of at most
   `window.max` (windows.py).
3. Read each piece (span_writer.py); the watermark moves to the piece's end in the
   transaction of its last page.
4. Log the run's end in `sync_time`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Unpack

import psycopg2
import structlog
from psycopg2.extensions import cursor as Cursor

from syncd.config.model import Config, Entity
from syncd.db.connection import Connection, connect, database_failure, rollback_quietly
from syncd.db.locks import incremental_lock
from syncd.db.schedule_state import MANUAL, Due, claim
from syncd.errors import SyncdError
from syncd.metrics import Metrics
from syncd.runs import RunKind, SkipReason
from syncd.sync.locking import LockedSession
from syncd.sync.parts import RunOptions, RunParts
from syncd.sync.recording import errors_into
from syncd.sync.results import RunOutcome, RunResult
from syncd.sync.span_writer import OnCommit
from syncd.sync.spans import Span, iso
from syncd.sync.windows import SourceTime, plan_pieces

__all__ = ["Engine", "RunOutcome", "RunResult"]

log = structlog.get_logger("syncd.sync.incremental")


class Engine:
    """Runs incremental syncs."""

    def __init__(self, config: Config, metrics: Metrics, **options: Unpack[RunOptions]) -> None:
        self.config = config
        self.metrics = metrics
        # `connect` is looked up at each use: tests and the benchmark replace it.
        self.parts = RunParts.build(config, metrics, connect=lambda: self.connect(), **options)
        # What the daemon hands on to its preloader, and to the engine of a reload.
        self.client = self.parts.client
        self.migration = self.parts.migration
        self.unrecorded = self.parts.recorder.unrecorded
        self.run_log = self.parts.run_log  # syncd's tables

    def connect(self) -> Connection:
        return connect(self.config.database)

    def sync_many(self, names: list[str]) -> list[RunResult]:
        """One pass over `names`, up to `scheduler.max_concurrent` at once."""
        workers = max(1, min(self.config.scheduler.max_concurrent, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
            return list(pool.map(self.sync_entity, names))

    def sync_entity(self, name: str, due: Due = MANUAL) -> RunResult:
        """One run of `name`. `due` says why: a scheduled run (its interval or `at`
        slot) skips when another instance already served that turn; a manual one
        (`syncd sync`, `POST /v1/sync`, the default) always runs."""
        entity = self.config.entities[name]
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(entity=name):
            result = self._locked_run(entity, due)
        result.seconds = time.monotonic() - started
        self.parts.recorder.count(result)
        if result.outcome == RunOutcome.OK:
            self.metrics.last_success.labels(entity=name).set(time.time())
        return result

    def _locked_run(self, entity: Entity, due: Due) -> RunResult:
        result = RunResult(entity.name)
        session, error = self.parts.locks.open(incremental_lock(entity.name), entity.name)
        if session is None:
            result.outcome, result.error = (
                (RunOutcome.FAILED, error) if error else (RunOutcome.SKIPPED, None)
            )
            if error:
                log.error("sync.failed", error=error)
            else:
                result.skip_reason = SkipReason.LOCKED
            return result
        try:
            if self._turn_taken(session.conn, entity, due, result):
                self._run(session, entity, result)
            return result
        finally:
            self.parts.locks.release(session)

    def _turn_taken(self, conn: Connection, entity: Entity, due: Due, result: RunResult) -> bool:
        """Claim this run's turn in the shared schedule; False (the result says why)
        when another instance served it or the database failed."""
        try:
            turn = claim(conn, self.config.database.schema, entity.name, due)
        except psycopg2.Error as exc:
            rollback_quietly(conn)
            result.error = database_failure(exc)
            log.error("sync.failed", error=result.error)
            return False
        if not turn.granted:
            result.outcome, result.skip_reason = RunOutcome.SKIPPED, SkipReason.SERVED
            result.next_in = turn.next_in
            log.info("sync.skipped", reason="another instance already ran this turn")
        return turn.granted

    def _run(self, session: LockedSession, entity: Entity, result: RunResult) -> None:
        """The run proper, lock held."""
        parts = self.parts
        source_time = SourceTime.of(entity)
        try:
            interrupted = parts.recorder.close_interrupted(
                session.conn, entity.name, RunKind.INCREMENTAL
            )
            if interrupted:
                log.warning("sync.interrupted_runs_closed", count=interrupted)
            stored = self._stored_watermark(session.conn, entity, source_time)
            start = stored if stored is not None else entity.window.initial_from
            assert start is not None  # the loader requires initial_from without preload
            pieces = plan_pieces(start, parts.now(), entity.window, source_time)
            window_from = pieces[0].start if pieces else None
            window_to = pieces[-1].end if pieces else None
            result.run_id = self.run_log.start_run(
                session.conn, entity.name, RunKind.INCREMENTAL, window_from, window_to
            )
        except psycopg2.Error as exc:
            result.error = database_failure(exc)
            log.error("sync.failed", error=result.error)
            return
        result.watermark = stored
        with structlog.contextvars.bound_contextvars(run_id=result.run_id):
            log.info("sync.started", window_from=iso(window_from), window_to=iso(window_to))
            with errors_into(result):
                for piece in pieces:
                    complete = parts.writer.write(
                        session, entity, result, piece, self._move_watermark(entity, piece)
                    )
                    if not complete:
                        raise SyncdError("stopped before the window was complete")
                    if result.watermark is None or piece.end > result.watermark:
                        # (a first piece may end before the stored watermark, which
                        # then stays: see SyncLog.set_watermark)
                        result.watermark = piece.end
                        self.metrics.watermark.labels(entity=entity.name).set(piece.end.timestamp())
            parts.recorder.finish(session, result)

    def _move_watermark(self, entity: Entity, piece: Span) -> OnCommit:
        def move(cur: Cursor) -> None:
            self.run_log.set_watermark(cur, entity.name, piece.end)

        return move

    def _stored_watermark(
        self, conn: Connection, entity: Entity, source_time: SourceTime
    ) -> datetime | None:
        """The committed watermark, creating the entity's state on its first run."""
        with conn.cursor() as cur:
            watermark = self.run_log.watermark(cur, entity.name)
            if watermark is None and entity.preload.enabled:
                # Incremental sync starts where the preload ends (E): no gap between them.
                now = source_time.truncate(self.parts.now())
                watermark = self.run_log.pin_preload_end(cur, entity.name, now)
        conn.commit()
        return watermark
