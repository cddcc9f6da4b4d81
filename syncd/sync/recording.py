"""A run's `sync_time` row and metrics: what ends a run becomes its one-line error,
its end is written even across a lost connection, and it is counted once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

import psycopg2
import structlog

from syncd.db.connection import Connection, close_quietly, database_failure, describe_db_error
from syncd.db.runlog import SyncLog
from syncd.errors import SyncdError
from syncd.metrics import Metrics
from syncd.runs import RunKind, SkipReason
from syncd.sync.locking import LockedSession
from syncd.sync.results import RunOutcome, RunResult

log = structlog.get_logger("syncd.sync.recording")


class Unrecorded:
    """Ends of runs that could not be written to `sync_time` (the database was gone
    for longer than the reconnect tries). The entity's next run of the same kind
    writes them, so the run keeps its real error instead of being called interrupted.
    Shared by the engines of one process (a reload passes it on)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: dict[int, tuple[str, RunKind, str | None]] = {}  # id -> entity, kind, error

    def remember(self, result: RunResult) -> None:
        assert result.run_id is not None
        with self._lock:
            self._ends[result.run_id] = (result.entity, result.kind, result.error)

    def of(self, entity: str, kind: RunKind) -> dict[int, str | None]:
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


@contextlib.contextmanager
def errors_into(result: RunResult) -> Iterator[None]:
    """Whatever ends a run early becomes its one-line error (for `sync_time`, the log
    and the command line); a bug is logged with its traceback but never takes the
    process down."""
    try:
        yield
    except SyncdError as exc:
        result.error = str(exc)
    except psycopg2.Error as exc:
        result.error = database_failure(exc)
    except Exception as exc:
        log.exception("sync.crashed")
        result.error = f"internal error: {type(exc).__name__}: {exc}"


class RunRecorder:
    """Writes runs' `sync_time` rows and counts them in the metrics."""

    def __init__(
        self,
        run_log: SyncLog,
        metrics: Metrics,
        connect: Callable[[], Connection],
        unrecorded: Unrecorded | None = None,
    ) -> None:
        self.run_log = run_log
        self.metrics = metrics
        self.connect = connect
        self.unrecorded = unrecorded or Unrecorded()

    def close_interrupted(self, conn: Connection, entity: str, kind: RunKind) -> int:
        """Write the ends kept for `entity` and `kind`, then mark its other `running`
        rows interrupted (SyncLog.close_interrupted: call it holding the lock of that
        kind of run); returns how many were interrupted."""
        ends = self.unrecorded.of(entity, kind)
        count = self.run_log.close_interrupted(conn, entity, kind, ends)
        self.unrecorded.forget(ends)
        return count

    def finish(self, session: LockedSession, result: RunResult) -> None:
        """Set the result's outcome from its error and record the run's end; the
        session's connection may be the one that broke (a new one replaces it). If
        the database cannot be reached, the end is kept for the entity's next run to
        record (see Unrecorded)."""
        assert result.run_id is not None
        result.outcome = RunOutcome.FAILED if result.error else RunOutcome.OK
        reason = ""
        for _ in range(2):
            try:
                if session.conn.closed:
                    session.conn = self.connect()
                session.conn.rollback()
                self.run_log.finish_run(session.conn, result.run_id, result.error)
                break
            except psycopg2.Error as exc:
                close_quietly(session.conn)
                reason = describe_db_error(exc)
        else:
            log.error("sync.finish_unrecorded", error=reason)
            self.unrecorded.remember(result)
        event = log.info if result.outcome == RunOutcome.OK else log.error
        event(
            "sync.finished",
            kind=result.kind,
            status=result.outcome,
            fetched=result.fetched,
            written=result.written,
            rejected=result.rejected,
            error=result.error,
        )

    def count(self, result: RunResult) -> None:
        """The run in the metrics: runs by outcome, duration; or one skip."""
        name = result.entity
        if result.outcome == RunOutcome.SKIPPED:
            reason = result.skip_reason or SkipReason.LOCKED
            self.metrics.skipped.labels(entity=name, reason=reason).inc()
            return
        self.metrics.runs.labels(entity=name, kind=result.kind, status=result.outcome).inc()
        self.metrics.duration.labels(entity=name, kind=result.kind).observe(result.seconds)
