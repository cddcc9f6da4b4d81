"""What a pull run reports back: `RunResult`, its `RunOutcome`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from syncd.runs import RunKind, RunStatus, SkipReason


class RunOutcome(StrEnum):
    """How a call to run an entity ended. `ok` and `failed` are the `sync_time`
    statuses of the run it recorded; the others recorded no run."""

    OK = RunStatus.OK.value
    FAILED = RunStatus.FAILED.value
    SKIPPED = "skipped"  # another instance holds the lock or served the turn: nothing done
    STOPPED = "stopped"  # a preload told to stop between two chunks: run it again


@dataclass
class RunResult:
    """One run of one entity: one `sync_time` row (none when skipped)."""

    entity: str
    outcome: RunOutcome = RunOutcome.FAILED  # until the run says otherwise
    kind: RunKind = RunKind.INCREMENTAL
    run_id: int | None = None
    fetched: int = 0
    written: int = 0
    rejected: int = 0
    watermark: datetime | None = None  # incremental: the committed watermark
    error: str | None = None
    seconds: float = 0.0
    skip_reason: SkipReason | None = None  # when skipped: why
    next_in: float | None = None  # skipped as served: seconds until the interval is due again
