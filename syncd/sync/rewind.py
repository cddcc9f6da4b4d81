"""`syncd rewind ENTITY --to TS`: move an entity's watermark back, to read again from TS.

An `UPDATE sync_state` by hand races a run in progress: that run commits its window's
end as the watermark when it finishes, and the rewind is silently undone. The rewind
therefore takes the entity's lock first, the one every incremental run holds for its
whole duration, waiting for a run in progress (at most `wait` seconds); the next run,
here or on any instance, starts from TS."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from syncd.config.model import Config
from syncd.db.connection import connect
from syncd.db.locks import incremental_lock, try_lock, unlock
from syncd.db.runlog import SyncLog
from syncd.errors import LockBusy, UsageError
from syncd.sync.windows import SourceTime

POLL = 0.5  # seconds between two tries of the lock


def rewind(
    config: Config,
    name: str,
    to: datetime,
    wait: float,
    *,
    forward: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[datetime, datetime]:
    """Set `name`'s watermark to `to` (as the source will be sent it); returns (old, new).
    LockBusy if a run still holds the lock after `wait` seconds. A watermark moved
    forward skips every record in between, so that takes `forward=True`; a watermark
    in the future is never set."""
    entity = config.entities[name]
    target = SourceTime.of(entity).truncate(to)
    if target > now():
        raise UsageError(f"--to {target.isoformat()} is in the future")
    run_log = SyncLog(config.database.schema)
    lock = incremental_lock(name)
    conn = connect(config.database)
    try:
        deadline = clock() + wait
        while not try_lock(conn, lock):
            if clock() >= deadline:
                raise LockBusy(
                    f"a run of {name} still holds its lock after {wait:g}s; try again, "
                    "or give a longer --wait"
                )
            sleep(POLL)
        try:
            with conn.cursor() as cur:
                old = run_log.watermark(cur, name)
                if old is None:
                    raise UsageError(
                        f"{name} has no watermark yet: nothing to rewind (its first run "
                        "starts at window.initial_from, or where its preload ends)"
                    )
                if target > old and not forward:
                    raise UsageError(
                        f"--to {target.isoformat()} is after the watermark {old.isoformat()}: "
                        "moving it forward skips every record in between (--forward to "
                        "do it anyway)"
                    )
                run_log.rewind_watermark(cur, name, target)
            conn.commit()
        finally:
            conn.rollback()
            unlock(conn, lock)
    finally:
        conn.close()
    return old, target
