"""Preload: backfill an entity's history in calendar chunks (docs/operations.md,
"Preload (history backfill)").

The configured preload covers `[preload.from, E)`, where E is pinned the first time
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
from typing import Any, Unpack

import psycopg2
import structlog
from psycopg2.extensions import cursor as Cursor

from syncd.config.model import CalendarStep, Config, Entity
from syncd.db.connection import Connection, connect, database_failure
from syncd.db.locks import preload_lock
from syncd.errors import SyncdError, UsageError
from syncd.metrics import Metrics
from syncd.runs import RunKind, SkipReason
from syncd.sync.chunks import chunks_done, plan_chunks
from syncd.sync.locking import LockedSession
from syncd.sync.parts import RunOptions, RunParts
from syncd.sync.recording import errors_into
from syncd.sync.results import RunOutcome, RunResult
from syncd.sync.span_writer import OnCommit, OnPage
from syncd.sync.spans import Span, iso
from syncd.sync.windows import SourceTime

log = structlog.get_logger("syncd.sync.preload")

# Told after every chunk: (chunk, its result).
ChunkDone = Callable[[Span, RunResult], None]


@dataclass
class PreloadPlan:
    """The chunks of one preload, and where it stands."""

    entity: str
    chunks: list[Span]
    done: int  # chunks already committed
    end: datetime | None  # E, for the configured preload; None for a range by hand

    @property
    def ratio(self) -> float:
        return 1.0 if not self.chunks else self.done / len(self.chunks)

    @property
    def remaining(self) -> list[Span]:
        return self.chunks[self.done :]


@dataclass
class PreloadResult:
    entity: str
    outcome: RunOutcome = RunOutcome.FAILED  # ok: all chunks done
    chunks_done: int = 0  # in this call
    chunks_total: int = 0
    fetched: int = 0
    written: int = 0
    rejected: int = 0
    error: str | None = None
    seconds: float = 0.0
    results: list[RunResult] = field(default_factory=list)
    skip_reason: SkipReason | None = None  # skipped: another instance holds its lock


def plan_for(
    entity: Entity,
    start: datetime,
    end: datetime,
    chunk: CalendarStep,
    done_to: datetime | None = None,
) -> list[Span]:
    """Chunks of `[start, end)`; with `done_to` inside a chunk (the chunk size was
    changed since), the first chunk left starts exactly there: no gap, no re-read."""
    chunks = plan_chunks(start, end, chunk, entity.source.timezone)
    if done_to is None:
        return chunks
    kept = [c for c in chunks if c.end > done_to]
    if kept and kept[0].start < done_to:
        kept[0] = Span(done_to, kept[0].end)
    return chunks[: len(chunks) - len(kept)] + kept


def progress_of(
    entity: Entity,
    end: datetime | None,
    done_to: datetime | None,
    done_from: datetime | None = None,
) -> PreloadPlan | None:
    """Where the configured preload stands, from its state (E, done_to, and the start
    that progress belongs to). None when no preload is configured or it has not
    started (E not pinned yet)."""
    preload = entity.preload
    if not preload.enabled or preload.from_ is None or end is None:
        return None
    source_time = SourceTime.of(entity)
    start = source_time.truncate(preload.from_)
    if done_from is not None and start < done_from:
        done_to = None  # `from` moved earlier: the next run starts over from it
    chunks = plan_for(entity, start, end, preload.chunk, done_to)
    return PreloadPlan(entity.name, chunks, chunks_done(chunks, done_to), end)


def preload_status(
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
        "from": iso(entity.preload.from_) if enabled else None,
        "end": iso(end) if enabled else None,
        "done_to": iso(done_to) if enabled else None,
        "chunk": str(entity.preload.chunk) if enabled else None,
        "chunks_done": plan.done if plan else 0,
        "chunks_total": len(plan.chunks) if plan else 0,
        "ratio": round(plan.ratio, 4) if plan else (0.0 if enabled else 1.0),
    }


class Preloader:
    """Runs preloads. One chunk at a time; stops between pages when told to."""

    def __init__(self, config: Config, metrics: Metrics, **options: Unpack[RunOptions]) -> None:
        self.config = config
        self.metrics = metrics
        # `connect` is looked up at each use: tests replace it.
        self.parts = RunParts.build(config, metrics, connect=lambda: self.connect(), **options)
        self.run_log = self.parts.run_log  # syncd's tables

    def connect(self) -> Connection:
        return connect(self.config.database)

    def configured_plan(self, conn: Connection, entity: Entity) -> PreloadPlan:
        """The configured preload's chunks and progress, pinning E if need be."""
        preload = entity.preload
        if not preload.enabled or preload.from_ is None:
            raise UsageError(
                f"entities.{entity.name}.preload is not enabled; give --from to "
                "preload a range by hand"
            )
        source_time = SourceTime.of(entity)
        start = source_time.truncate(preload.from_)
        with conn.cursor() as cur:
            end = self.run_log.pin_preload_end(
                cur, entity.name, source_time.truncate(self.parts.now()), entity.window.initial_from
            )
            done_to = self.run_log.begin_preload(cur, entity.name, start)
        conn.commit()
        plan = progress_of(entity, end, done_to)
        assert plan is not None  # enabled, with a `from`, and E pinned
        return plan

    def progress(self, conn: Connection, entity: Entity) -> PreloadPlan | None:
        """Where the configured preload stands, changing nothing."""
        with conn.cursor() as cur:
            state = self.run_log.preload_state(cur, entity.name)
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
        on_page: OnPage | None = None,
    ) -> PreloadResult:
        """Run the configured preload (no `start`), or the range `[start, end)` by
        hand (`end` defaults to E, or now before there is one). `on_page` is told the
        records of each page as it commits, `on_chunk` each chunk once done."""
        entity = self.config.entities[name]
        if chunk is not None:
            entity = replace(entity, preload=replace(entity.preload, chunk=chunk))
        began = time.monotonic()
        result = PreloadResult(name)
        with structlog.contextvars.bound_contextvars(entity=name):
            session, error = self.parts.locks.open(preload_lock(name), name)
            if session is None:
                if error:
                    result.error = error
                else:
                    result.outcome, result.skip_reason = RunOutcome.SKIPPED, SkipReason.LOCKED
                    self.metrics.skipped.labels(entity=name, reason=result.skip_reason).inc()
                return result
            try:
                interrupted = self.parts.recorder.close_interrupted(
                    session.conn, name, RunKind.PRELOAD
                )
                if interrupted:
                    log.warning("preload.interrupted_runs_closed", count=interrupted)
                plan = (
                    self.configured_plan(session.conn, entity)
                    if start is None
                    else self._range_plan(session.conn, entity, start, end)
                )
                result.chunks_total = len(plan.chunks)
                if on_plan is not None:
                    on_plan(plan)
                self._set_ratio(plan)
                self._run_chunks(session, entity, plan, result, on_chunk, on_page)
            except psycopg2.Error as exc:
                result.error = database_failure(exc)
            except UsageError:
                raise  # the command line was wrong: exit 2, not a failed preload
            except SyncdError as exc:
                result.error = str(exc)
            finally:
                self.parts.locks.release(session)
        result.seconds = time.monotonic() - began
        if result.error:
            result.outcome = RunOutcome.FAILED
        return result

    def _range_plan(
        self, conn: Connection, entity: Entity, start: datetime, end: datetime | None
    ) -> PreloadPlan:
        source_time = SourceTime.of(entity)
        if end is None:
            with conn.cursor() as cur:
                pinned, _, _ = self.run_log.preload_state(cur, entity.name)
            conn.rollback()
            end = pinned or self.parts.now()
        first, last = source_time.truncate(start), source_time.truncate(end)
        if first >= last:
            raise UsageError(f"--from {first.isoformat()} is not before --to {last.isoformat()}")
        return PreloadPlan(
            entity.name, plan_for(entity, first, last, entity.preload.chunk), 0, None
        )

    def _run_chunks(
        self,
        session: LockedSession,
        entity: Entity,
        plan: PreloadPlan,
        result: PreloadResult,
        on_chunk: ChunkDone | None,
        on_page: OnPage | None,
    ) -> None:
        parts = self.parts
        for chunk in plan.remaining:
            if parts.stop.is_set():
                result.outcome = RunOutcome.STOPPED
                return
            run = RunResult(entity.name, kind=RunKind.PRELOAD)
            run.run_id = self.run_log.start_run(
                session.conn, entity.name, RunKind.PRELOAD, chunk.start, chunk.end
            )
            on_commit = self._chunk_done(entity, chunk, run.run_id, advance=plan.end is not None)
            began = time.monotonic()
            with structlog.contextvars.bound_contextvars(run_id=run.run_id):
                log.info(
                    "preload.chunk_started",
                    chunk_from=chunk.start.isoformat(),
                    chunk_to=chunk.end.isoformat(),
                )
                with errors_into(run):
                    if not parts.writer.write(session, entity, run, chunk, on_commit, on_page):
                        run.error = "stopped before the chunk was complete"
                parts.recorder.finish(session, run)
            run.seconds = time.monotonic() - began
            parts.recorder.count(run)
            result.results.append(run)
            result.fetched += run.fetched
            result.written += run.written
            result.rejected += run.rejected
            if run.error:
                result.error = run.error
                return
            result.chunks_done += 1
            plan.done += 1
            self._set_ratio(plan)
            if on_chunk is not None:
                on_chunk(chunk, run)
        result.outcome = RunOutcome.OK

    def _chunk_done(self, entity: Entity, chunk: Span, run_id: int, *, advance: bool) -> OnCommit:
        """Committed with the chunk's last page: the chunk's `sync_time` row is `ok`
        in the same transaction as its data (a crash right after must not leave a
        finished chunk recorded as interrupted), and the configured preload's
        progress moves to the chunk's end (a range by hand moves no progress)."""

        def done(cur: Cursor) -> None:
            self.run_log.mark_ok(cur, run_id)
            if advance:
                self.run_log.set_preload_done_to(cur, entity.name, chunk.end)

        return done

    def _set_ratio(self, plan: PreloadPlan) -> None:
        if plan.end is not None:  # only the configured preload is progress
            self.metrics.preload_progress.labels(entity=plan.entity).set(plan.ratio)
