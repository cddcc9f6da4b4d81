"""The vocabulary of a sync run, shared by every layer: what kind of run it is and how
it stands. `sync_time.kind` and `sync_time.status` hold these values (the schema's
CHECK constraints are built from them), and the metrics' `kind` and `status` labels
use them, so a new kind or status is added here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum


class RunKind(StrEnum):
    """What a `sync_time` row records."""

    INCREMENTAL = "incremental"  # a scheduled or requested pass from the watermark on
    PRELOAD = "preload"  # one calendar chunk of a backfill
    INGEST = "ingest"  # one pushed request


class RunStatus(StrEnum):
    """Where a run stands: `running` until it ends `ok` or `failed`."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


FINAL_STATUSES = (RunStatus.OK, RunStatus.FAILED)  # what a run can end as


def sql_values(members: type[StrEnum]) -> str:
    """`'a', 'b'`: the members as SQL string literals, for a CHECK (... IN (...)).
    The values are our own constants (plain lowercase words), never input."""
    return ", ".join(f"'{member.value}'" for member in members)


class SkipReason(StrEnum):
    """Why a scheduled run did nothing (no `sync_time` row): the `reason` label of
    `syncd_sync_skipped_total`. With several instances both are normal."""

    LOCKED = "locked"  # another process is running the entity now (its advisory lock)
    SERVED = "served"  # another instance already ran it in this interval or `at` slot
