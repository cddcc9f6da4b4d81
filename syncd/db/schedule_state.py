"""The schedule every syncd instance on a database shares (docs/operations.md,
"Several instances"): in each entity's `sync_state` row, when its last run started
(by any instance, on the database's clock), the last `at` slot served, and which
host and process started it.

A scheduled run claims its turn before it does anything else, with the entity's
advisory lock already held and its `sync_state` row locked: deciding and recording
are one transaction, so two instances can never both take the same interval or
slot. The decision reads the database's `now()`, never a host's clock, so
instances whose clocks disagree by a second or two still agree on whose turn it is.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg2 import sql

from syncd.db.connection import Connection
from syncd.db.runlog import process_alive

# An instance plans its next run from its own monotonic clock, a little before the
# database records the start; so "one interval since the last start" is read with
# this much slack (a tenth of the interval, at most a second).
SLACK_MAX = 1.0

# Added to sync_state by `migrate` (docs/operations.md, "Several instances").
COLUMNS = (
    ("last_started_at", "timestamptz"),  # the last run's start, any instance, database clock
    ("last_slot", "timestamptz"),  # the latest `at` instant a run was started for
    ("last_host", "text"),  # who started the last run
    ("last_pid", "integer"),
)


@dataclass(frozen=True)
class Due:
    """Why a run starts: a manual request (always runs), an `every` interval in
    seconds, or the `at` instant it is for. `first`: the first run of an `every`
    entity since this instance started."""

    manual: bool = False
    interval: float | None = None
    slot: datetime | None = None
    first: bool = False


MANUAL = Due(manual=True)


@dataclass(frozen=True)
class Claim:
    """The answer: run now, or skip because the turn was served; then `next_in` says
    when (seconds from now) the interval that was served comes due again."""

    granted: bool
    next_in: float | None = None


def slack(interval: float) -> float:
    return min(SLACK_MAX, interval / 10)


def claim(conn: Connection, schema: str, entity: str, due: Due) -> Claim:
    """Take `entity`'s turn for `due`, or learn that another instance took it; commits.
    The caller holds the entity's advisory lock. This host and process are recorded
    as the last to run it, like `sync_time.host` and `pid`."""
    table = sql.Identifier(schema, "sync_state")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (entity) VALUES (%s) ON CONFLICT (entity) DO NOTHING").format(
                table
            ),
            (entity,),
        )
        cur.execute(
            sql.SQL(
                "SELECT last_started_at, last_slot, now(), last_host, last_pid FROM {}"
                " WHERE entity = %s FOR UPDATE"
            ).format(table),
            (entity,),
        )
        row = cur.fetchone()
        assert row is not None  # inserted above if missing
        last_started, last_slot, now, last_host, last_pid = row
        answer = decide(due, last_started, last_slot, now, _restarted(last_host, last_pid))
        if answer.granted:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET last_started_at = now(), last_host = %s, last_pid = %s,"
                    " last_slot = GREATEST(last_slot, %s) WHERE entity = %s"
                ).format(table),
                (socket.gethostname(), os.getpid(), due.slot, entity),
            )
    conn.commit()
    return answer


def _restarted(last_host: str | None, last_pid: int | None) -> bool:
    """Whether the last run was started by a process of this host that is gone (or
    whose pid this process now has): this instance is that one, restarted."""
    if last_host != socket.gethostname():
        return False
    return last_pid == os.getpid() or not process_alive(last_pid)


def decide(
    due: Due,
    last_started: datetime | None,
    last_slot: datetime | None,
    now: datetime,
    restarted: bool = False,
) -> Claim:
    """The rule, on the database's times (pure, for the tests). `restarted`: the last
    run was this instance's before a restart; an `every` entity runs at start then,
    as a single syncd always did, instead of waiting out the interval."""
    if due.manual or (due.first and restarted):
        return Claim(True)
    if due.slot is not None:
        return Claim(last_slot is None or last_slot < due.slot)
    if due.interval is not None and last_started is not None:
        next_due = last_started + timedelta(seconds=due.interval)
        if now < next_due - timedelta(seconds=slack(due.interval)):
            return Claim(False, (next_due - now).total_seconds())
    return Claim(True)
