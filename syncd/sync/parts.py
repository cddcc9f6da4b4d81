"""The parts every kind of pull run is composed of, built once per `Engine` or
`Preloader` from the same constructor arguments:

- `RunLocks` (locking.py): a connection holding the run's advisory lock for the
  whole run, taken again after a reconnect;
- `RunRecorder` (recording.py): the run's `sync_time` row, its one-line error, its
  end written even across a lost connection, its metrics;
- `SpanWriter` (span_writer.py): one span of source time read page by page, each page
  committed, the last one with the span's commit hook.

An incremental run (incremental.py) and a preload (preload.py) differ only in what
spans they read and what each span's commit hook moves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from syncd.config.model import Config
from syncd.db.connection import Connection
from syncd.db.runlog import SyncLog
from syncd.db.schema import PendingMigration
from syncd.metrics import Metrics
from syncd.sync.locking import RunLocks
from syncd.sync.recording import RunRecorder, Unrecorded
from syncd.sync.source import SourceClient
from syncd.sync.span_writer import SpanWriter


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunOptions(TypedDict, total=False):
    """The optional constructor arguments of `Engine` and `Preloader` (all go to
    `RunParts.build`): what tests replace, and what the daemon shares between them."""

    client: SourceClient | None
    now: Callable[[], datetime]
    sleep: Callable[[float], None]
    stop: threading.Event | None
    migration: PendingMigration | None
    unrecorded: Unrecorded | None


@dataclass
class RunParts:
    """What a run needs; side effects (the clock, sleeping, the source, the
    database) come in through `build`'s arguments, so tests can replace them."""

    config: Config
    metrics: Metrics
    client: SourceClient
    run_log: SyncLog  # syncd's tables (the database's run log, not a logger)
    locks: RunLocks
    recorder: RunRecorder
    writer: SpanWriter
    now: Callable[[], datetime]
    stop: threading.Event
    migration: PendingMigration | None

    @classmethod
    def build(
        cls,
        config: Config,
        metrics: Metrics,
        *,
        connect: Callable[[], Connection],
        client: SourceClient | None = None,
        now: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
        migration: PendingMigration | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> RunParts:
        stop = stop or threading.Event()
        # Retry waits end early when the daemon is stopping.
        client = client or SourceClient(
            observe=metrics.observe_request, sleep=stop.wait, should_stop=stop.is_set
        )
        run_log = SyncLog(config.database.schema)
        locks = RunLocks(connect, migration)
        return cls(
            config=config,
            metrics=metrics,
            client=client,
            run_log=run_log,
            locks=locks,
            recorder=RunRecorder(run_log, metrics, connect, unrecorded),
            writer=SpanWriter(config, metrics, client, run_log, locks, sleep=sleep, stop=stop),
            now=now,
            stop=stop,
            migration=migration,
        )
