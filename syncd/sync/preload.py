"""Preload: backfill an entity's history in calendar chunks (CONTRACT §9).

The configured preload covers `[preload.from, E)`, where E is fixed the first time
the entity starts (and where its incremental sync starts), in chunks cut at
calendar boundaries in the source time zone (chunks.py). Chunks run in order, one
`sync_time` row each (kind `preload`, the chunk's bounds in `window_from` and
`window_to`), each read like any window (drift-safe paging) and committed with
its progress mark, `sync_state.preload_done_to = chunk end`, in the transaction
of its last page. So a restart continues after the last committed chunk: a
finished chunk is never read again and no gap can open between chunks, nor
between the preload and incremental sync (both meet at E).

A preload holds its own advisory lock (not the incremental one): incremental sync
goes on during a long backfill, and two instances never preload the same entity
at once. A range given by hand (`syncd preload ENTITY --from --to`) is read the
same way but moves no progress mark: it re-reads history, it does not do the
configured preload's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg2
import structlog

from syncd.config.model import CalendarStep, Entity
from syncd.db.connection import Connection, describe_db_error
from syncd.db.runlog import preload_lock
from syncd.errors import SyncdError, UsageError
from syncd.sync.chunks import Chunk, chunks_done, plan_chunks
from syncd.sync.runner import EntityRunner, Mark, RunResult
from syncd.sync.windows import Piece, SourceTime

log = structlog.get_logger("syncd.sync.preload")

# Told after every chunk: (chunk, its result).
ChunkDone = Callable[[Chunk, RunResult], None]


@dataclass
class PreloadPlan:
    """The chunks of one preload, and where it stands."""

    entity: str
    chunks: list[Chunk]
    done: int  # chunks already committed
    end: datetime | None  # E, for the configured preload; None for a range by hand

    @property
    def ratio(self) -> float:
        return 1.0 if not self.chunks else self.done / len(self.chunks)

    @property
    def remaining(self) -> list[Chunk]:
        return self.chunks[self.done :]


@dataclass
class PreloadResult:
    entity: str
    status: str  # ok (all chunks done), stopped, failed, skipped
    chunks_done: int = 0  # in this call
    chunks_total: int = 0
    fetched: int = 0
    written: int = 0
    rejected: int = 0
    error: str | None = None
    seconds: float = 0.0
    results: list[RunResult] = field(default_factory=list)


def plan_for(
    entity: Entity,
    start: datetime,
    end: datetime,
    chunk: CalendarStep,
    done_to: datetime | None = None,
) -> list[Chunk]:
    """Chunks of `[start, end)`; with `done_to` inside a chunk (the chunk size was
    changed since), the first chunk left starts exactly there: no gap, no re-read."""
    chunks = plan_chunks(start, end, chunk, entity.source.timezone)
    if done_to is None:
        return chunks
    kept = [c for c in chunks if c.end > done_to]
    if kept and kept[0].start < done_to:
        kept[0] = Chunk(done_to, kept[0].end)
    return chunks[: len(chunks) - len(kept)] + kept


def progress_of(
    entity: Entity,
    end: datetime | None,
    done_to: datetime | None,
    done_from: datetime | None = None,
) -> PreloadPlan | None:
    """Where the configured preload stands, from its state (E, done_to, and the start
    that progress belongs to). None when no preload is configured or it has not
    started (E not fixed yet)."""
    preload = entity.preload
    if not preload.enabled or preload.from_ is None or end is None:
        return None
    source_time = SourceTime(entity.source.time_format, entity.source.timezone)
    start = source_time.truncate(preload.from_)
    if done_from is not None and start < done_from:
        done_to = None  # `from` moved earlier: the next run starts over from it
    chunks = plan_for(entity, start, end, preload.chunk, done_to)
    return PreloadPlan(entity.name, chunks, chunks_done(chunks, done_to), end)


def describe(
    entity: Entity,
    end: datetime | None,
    done_to: datetime | None,
    done_from: datetime | None = None,
) -> dict[str, Any]:
    """The `preload` object of `syncd status --json` and `/status`."""
    plan = progress_of(entity, end, done_to, done_from)
    enabled = entity.preload.enabled
    return {
        "enabled": enabled,
        "from": entity.preload.from_.isoformat() if enabled and entity.preload.from_ else None,
        "end": end.isoformat() if enabled and end else None,
        "done_to": done_to.isoformat() if enabled and done_to else None,
        "chunk": str(entity.preload.chunk) if enabled else None,
        "chunks_done": plan.done if plan else 0,
        "chunks_total": len(plan.chunks) if plan else 0,
        "ratio": round(plan.ratio, 4) if plan else (0.0 if enabled else 1.0),
    }


class Preloader(EntityRunner):
    """Runs preloads. One chunk at a time; stops between pages when told to."""

    def configured_plan(self, conn: Connection, entity: Entity) -> PreloadPlan:
        """The configured preload's chunks and progress, fixing E if need be."""
        preload = entity.preload
        if not preload.enabled or preload.from_ is None:
            raise UsageError(
                f"entities.{entity.name}.preload is not enabled; give --from to "
                "preload a range by hand"
            )
        source_time = self.source_time(entity)
        start = source_time.truncate(preload.from_)
        with conn.cursor() as cur:
            end = self.log.fix_preload_end(
                cur, entity.name, source_time.truncate(self.now()), entity.window.initial_from
            )
            done_to = self.log.begin_preload(cur, entity.name, start)
        conn.commit()
        chunks = plan_for(entity, start, end, preload.chunk, done_to)
        return PreloadPlan(entity.name, chunks, chunks_done(chunks, done_to), end)

    def progress(self, conn: Connection, entity: Entity) -> PreloadPlan | None:
        """Where the configured preload stands, changing nothing."""
        with conn.cursor() as cur:
            state = self.log.preload_state(cur, entity.name)
        conn.rollback()
        return progress_of(entity, *state)

    def preload_entity(
        self,
        name: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        chunk: CalendarStep | None = None,
        on_plan: Callable[[PreloadPlan], None] | None = None,
        on_chunk: ChunkDone | None = None,
    ) -> PreloadResult:
        """Run the configured preload (no `start`), or the range `[start, end)` by
        hand (`end` defaults to E, or now before there is one)."""
        entity = self.config.entities[name]
        if chunk is not None:
            entity = replace(entity, preload=replace(entity.preload, chunk=chunk))
        began = time.monotonic()
        result = PreloadResult(name, "failed")
        lock = preload_lock(name)
        with structlog.contextvars.bound_contextvars(entity=name):
            conn, error = self.open_locked(lock, name)
            if conn is None:
                result.status, result.error = ("failed", error) if error else ("skipped", None)
                if not error:
                    self.metrics.skipped.labels(entity=name).inc()
                return result
            try:
                interrupted = self.unrecorded.close_interrupted(self.log, conn, name, "preload")
                if interrupted:
                    log.warning("preload.interrupted_runs_closed", count=interrupted)
                plan = (
                    self.configured_plan(conn, entity)
                    if start is None
                    else self._range_plan(conn, entity, start, end)
                )
                result.chunks_total = len(plan.chunks)
                if on_plan is not None:
                    on_plan(plan)
                self._set_ratio(plan)
                conn = self._run_chunks(conn, lock, entity, plan, result, on_chunk)
            except psycopg2.Error as exc:
                result.error = f"database: {describe_db_error(exc)}"
            except UsageError:
                raise  # the command line was wrong: exit 2, not a failed preload
            except SyncdError as exc:
                result.error = str(exc)
            finally:
                self.release(conn, lock)
        result.seconds = time.monotonic() - began
        if result.error:
            result.status = "failed"
        return result

    def _range_plan(
        self, conn: Connection, entity: Entity, start: datetime, end: datetime | None
    ) -> PreloadPlan:
        source_time = self.source_time(entity)
        if end is None:
            with conn.cursor() as cur:
                fixed, _, _ = self.log.preload_state(cur, entity.name)
            conn.rollback()
            end = fixed or self.now()
        first, last = source_time.truncate(start), source_time.truncate(end)
        if first >= last:
            raise UsageError(f"--from {first.isoformat()} is not before --to {last.isoformat()}")
        return PreloadPlan(
            entity.name, plan_for(entity, first, last, entity.preload.chunk), 0, None
        )

    def _run_chunks(
        self,
        conn: Connection,
        lock: str,
        entity: Entity,
        plan: PreloadPlan,
        result: PreloadResult,
        on_chunk: ChunkDone | None,
    ) -> Connection:
        for chunk in plan.remaining:
            if self.stop.is_set():
                result.status = "stopped"
                return conn
            run = RunResult(entity.name, "failed", kind="preload")
            run.run_id = self.log.start_run(conn, entity.name, "preload", chunk.start, chunk.end)
            mark = self._chunk_mark(entity, chunk, run.run_id, advance=plan.end is not None)
            began = time.monotonic()
            with structlog.contextvars.bound_contextvars(run_id=run.run_id):
                log.info(
                    "preload.chunk_started",
                    chunk_from=chunk.start.isoformat(),
                    chunk_to=chunk.end.isoformat(),
                )
                with self.recording_errors(run):
                    conn, complete = self.read_piece(
                        conn, lock, entity, run, Piece(chunk.start, chunk.end), mark
                    )
                    if not complete:
                        run.error = "stopped before the chunk was complete"
                conn = self.finish(conn, run)
            run.seconds = time.monotonic() - began
            self.count_run(run)
            result.results.append(run)
            result.fetched += run.fetched
            result.written += run.written
            result.rejected += run.rejected
            if run.error:
                result.error = run.error
                return conn
            result.chunks_done += 1
            plan.done += 1
            self._set_ratio(plan)
            if on_chunk is not None:
                on_chunk(chunk, run)
        result.status = "ok"
        return conn

    def _chunk_mark(self, entity: Entity, chunk: Chunk, run_id: int, *, advance: bool) -> Mark:
        """Committed with the chunk's last page: the chunk's `sync_time` row is `ok`
        in the same transaction as its data (a crash right after must not leave a
        finished chunk recorded as interrupted), and the configured preload's
        progress moves to the chunk's end (a range by hand moves no progress)."""

        def mark(cur: psycopg2.extensions.cursor) -> None:
            self.log.mark_ok(cur, run_id)
            if advance:
                self.log.set_preload_done_to(cur, entity.name, chunk.end)

        return mark

    def _set_ratio(self, plan: PreloadPlan) -> None:
        if plan.end is not None:  # only the configured preload is progress
            self.metrics.preload_progress.labels(entity=plan.entity).set(plan.ratio)
