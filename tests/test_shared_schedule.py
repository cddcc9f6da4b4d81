"""Three `syncd run` processes on one database share one schedule ("Several
instances" in docs/operations.md): an `every` entity runs once per interval across
them, not once per instance, and when the instance that ran it is killed (-9) another
one runs it within one interval (plus a second) of the missed due time."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devtools.devcluster import free_port
from tests.daemon_support import (
    WAIT,
    daemon_config,
    daemons,
    db_now,
    runs,
    start_instances,
    value_of,
    wait_for,
)
from tests.support import MakeDemo, write_config

ENTITIES = ["task", "user"]
EVERY = 2.0  # seconds
OBSERVE = 12.0  # seconds the three run side by side
# A run's sync_time.started_at comes a few milliseconds after its claim; the claim
# allows a tenth of the interval of slack (db/schedule_state.py).
MIN_GAP = EVERY * 0.9 - 0.15
MAX_GAP = EVERY + 1.0


def starts(dsn: str, entity: str, since: datetime) -> list[tuple[datetime, int]]:
    """(start, pid) of the incremental runs of `entity` started after `since`."""
    return [
        (r["started_at"], r["pid"])
        for r in runs(dsn, entity)
        if r["kind"] == "incremental" and r["started_at"] > since
    ]


def gaps(found: list[tuple[datetime, int]]) -> list[float]:
    return [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(found)]


def test_three_instances_run_each_interval_once_and_take_over_from_a_killed_one(
    tmp_path: Path, pg_dsn: str, make_demo: MakeDemo
) -> None:
    now = datetime.now(UTC)
    demo = make_demo(counts={"task": 30, "user": 10}, start=now - timedelta(hours=2), end=now)
    with daemons(tmp_path) as procs:
        instances = start_instances(
            procs,
            tmp_path,
            pg_dsn,
            demo,
            ["a", "b", "c"],
            entities=ENTITIES,
            initial_from=now - timedelta(hours=3),
            every=f"{int(EVERY * 1000)}ms",
        )

        # Side by side: once per interval across the three, never twice in one.
        since = db_now(pg_dsn) + timedelta(seconds=EVERY)  # past the start-up runs
        time.sleep(OBSERVE)
        until = db_now(pg_dsn)
        span = (until - since).total_seconds()
        for entity in ENTITIES:
            found = [s for s in starts(pg_dsn, entity, since) if s[0] <= until]
            assert span / EVERY - 1.5 <= len(found) <= span / EVERY + 1, (entity, found)
            assert min(gaps(found)) >= MIN_GAP, (entity, gaps(found))
            assert max(gaps(found)) <= MAX_GAP, (entity, gaps(found))
        served = sum(
            value_of(syncd.metrics(), "syncd_sync_skipped_total", entity=e, reason="served") or 0
            for syncd in instances
            for e in ENTITIES
        )
        assert served > 0, "no instance ever found a turn served by another"

        # The instance that ran task last dies; the others go on, on time.
        last_start, last_pid = starts(pg_dsn, "task", since)[-1]
        [victim] = [s for s in instances if s.pid == last_pid]
        victim.send(signal.SIGKILL)
        victim.wait_exit(WAIT)
        killed_at = db_now(pg_dsn)

        def taken_over() -> bool:
            return any(pid != last_pid for _, pid in starts(pg_dsn, "task", killed_at))

        wait_for(taken_over, WAIT, "another instance to run task after the kill")
        first_after = next(s for s in starts(pg_dsn, "task", killed_at) if s[1] != last_pid)
        missed_due = max(last_start + timedelta(seconds=EVERY), killed_at)
        assert (first_after[0] - missed_due).total_seconds() <= EVERY + 1.0
        for syncd in instances:
            if syncd is not victim:
                syncd.send(signal.SIGTERM)
                assert syncd.wait_exit(WAIT) == 0


def test_one_instance_restarted_within_the_interval_runs_at_start_again(
    tmp_path: Path, pg_dsn: str, make_demo: MakeDemo
) -> None:
    """The shared schedule does not change a single syncd: its `every` entities run at
    start, even when the previous process ran them a moment ago."""
    now = datetime.now(UTC)
    demo = make_demo(counts={"task": 10}, start=now - timedelta(hours=1), end=now)
    port = free_port()
    data = daemon_config(
        pg_dsn, demo, port, entities=["task"], initial_from=now - timedelta(hours=2), every="1m"
    )
    config = write_config(tmp_path, data)
    with daemons(tmp_path) as procs:
        first = procs.start(config, port, name="first")
        first.wait_ready()
        wait_for(lambda: len(starts(pg_dsn, "task", now)) == 1, WAIT, "the run at start")
        first.send(signal.SIGTERM)
        assert first.wait_exit(WAIT) == 0
        second = procs.start(config, port, name="second")
        second.wait_ready()
        wait_for(lambda: len(starts(pg_dsn, "task", now)) == 2, WAIT, "a run at the restart")
        [(_, one), (_, two)] = starts(pg_dsn, "task", now)
        assert (one, two) == (first.pid, second.pid)
        second.send(signal.SIGTERM)
        assert second.wait_exit(WAIT) == 0
