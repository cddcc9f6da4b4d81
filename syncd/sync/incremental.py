"""One incremental run of one entity: `[watermark - lookback, now - lag)` into its table.

1. Take the entity's advisory lock (else: skipped, no `sync_time` row). While held,
   `running` incremental rows of the entity are leftovers of a dead process: mark
   them failed.
2. Read the watermark (on the very first run of an entity with preload, fix the
   preload's end E and start there); plan the window in pieces of at most
   `window.max` (windows.py).
3. Read each piece (runner.py); the watermark moves to the piece's end in the
   transaction of its last page.
4. Log the run's end in `sync_time`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import psycopg2
import structlog
from psycopg2.extensions import cursor as Cursor

from syncd.config.model import Entity
from syncd.db.connection import Connection, describe_db_error
from syncd.db.runlog import incremental_lock
from syncd.errors import SyncdError
from syncd.sync.runner import EntityRunner, Mark, RunResult, iso
from syncd.sync.windows import Piece, SourceTime, plan_pieces

__all__ = ["Engine", "RunResult"]

log = structlog.get_logger("syncd.sync.incremental")


class Engine(EntityRunner):
    """Runs incremental syncs."""

    def sync_many(self, names: list[str]) -> list[RunResult]:
        """One pass over `names`, up to `scheduler.max_concurrent` at once."""
        workers = max(1, min(self.config.scheduler.max_concurrent, len(names)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
            return list(pool.map(self.sync_entity, names))

    def sync_entity(self, name: str) -> RunResult:
        entity = self.config.entities[name]
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(entity=name):
            result = self._locked_run(entity)
        result.seconds = time.monotonic() - started
        self.count_run(result)
        if result.status == "ok":
            self.metrics.last_success.labels(entity=name).set(time.time())
        return result

    def _locked_run(self, entity: Entity) -> RunResult:
        result = RunResult(entity.name, "failed")
        lock = incremental_lock(entity.name)
        conn, error = self.open_locked(lock, entity.name)
        if conn is None:
            result.status, result.error = ("failed", error) if error else ("skipped", None)
            if error:
                log.error("sync.failed", error=error)
            return result
        try:
            conn = self._run(conn, lock, entity, result)
            return result
        finally:
            self.release(conn, lock)

    def _run(self, conn: Connection, lock: str, entity: Entity, result: RunResult) -> Connection:
        """The run proper, lock held. Returns the connection in use at the end."""
        source_time = self.source_time(entity)
        try:
            interrupted = self.unrecorded.close_interrupted(
                self.log, conn, entity.name, "incremental"
            )
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
            log.info("sync.started", window_from=iso(window_from), window_to=iso(window_to))
            with self.recording_errors(result):
                for piece in pieces:
                    conn, complete = self.read_piece(
                        conn, lock, entity, result, piece, self._watermark_mark(entity, piece)
                    )
                    if not complete:
                        raise SyncdError("stopped before the window was complete")
                    if result.watermark is None or piece.end > result.watermark:
                        # (a first piece may end before the stored watermark, which
                        # then stays: see SyncLog.set_watermark)
                        result.watermark = piece.end
                        self.metrics.watermark.labels(entity=entity.name).set(piece.end.timestamp())
            conn = self.finish(conn, result)
        return conn

    def _watermark_mark(self, entity: Entity, piece: Piece) -> Mark:
        def mark(cur: Cursor) -> None:
            self.log.set_watermark(cur, entity.name, piece.end)

        return mark

    def _stored_watermark(
        self, conn: Connection, entity: Entity, source_time: SourceTime
    ) -> datetime | None:
        """The committed watermark, creating the entity's state on its first run."""
        with conn.cursor() as cur:
            watermark = self.log.watermark(cur, entity.name)
            if watermark is None and entity.preload.enabled:
                # CONTRACT §9: incremental sync starts where the preload ends (E).
                now = source_time.truncate(self.now())
                watermark = self.log.fix_preload_end(cur, entity.name, now)
        conn.commit()
        return watermark
