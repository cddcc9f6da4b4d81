"""Three `syncd run` processes on one database share one schedule ("Several
instances" in docs/operations.md): an `every` entity runs once per interval across
them, not once per instance, and when the instance that ran it is killed (-9) another
one runs it within one interval (plus a second) of the missed due time; each `at`
slot runs once across them. Their wall clocks disagree by 1.5 s either way (set
with libfaketime), which changes nothing: the shared schedule decides on the
database's clock."""

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
from tests.support import MakeDemo, query, write_config

ENTITIES = ["task", "user"]
EVERY = 2.0  # seconds
OBSERVE = 12.0  # seconds the three run side by side
# A run's sync_time.started_at comes after its claim (a few milliseconds, more on a
# loaded machine); the claim allows a tenth of the interval of slack
# (db/schedule_state.py). A turn served twice would show as a gap near zero.
MIN_GAP = EVERY * 0.9 - 0.5
MAX_GAP = EVERY + 1.0
SKEWED = {"b": 1.5, "c": -1.5}  # seconds each instance's wall clock is off


def starts(dsn: str, entity: str, since: datetime) -> list[tuple[datetime, int]]:
    """(start, pid) of the incremental runs of `entity` started after `since`."""
    return [
        (r["started_at"], r["pid"])
        for r in runs(dsn, entity)
        if r["kind"] == "incremental" and r["started_at"] > since
    ]


def gaps(found: list[tuple[datetime, int]]) -> list[float]:
    return [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(found)]


def test_three_instances_with_skewed_clocks_run_each_interval_once_and_take_over(
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
            clock_offsets=SKEWED,
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


# Seconds from the test's start to the `at` slot that comes while the instances run
# (one that starts later only catches that slot up at start: served once all the same).
LEAD = 10.0


def test_three_instances_with_skewed_clocks_run_each_at_slot_once(
    tmp_path: Path, pg_dsn: str, make_demo: MakeDemo
) -> None:
    """`at` slots are whole minutes: the instances' wall clocks are set a few seconds
    before a minute's turn (one true to that, one 1.5 s ahead, one 1.5 s behind), and
    the entity is due at that minute and the one before. The one before, missed
    before they started, is caught up once; the one that comes while they run runs
    once; every instance that was beaten to a slot counts a skip."""
    real = datetime.now(UTC)
    demo = make_demo(counts={"task": 10}, start=real - timedelta(hours=1), end=real)
    slot = real.replace(second=0, microsecond=0)  # the minute now begun, in the past
    offset = (slot - timedelta(seconds=LEAD) - real).total_seconds()
    slot_comes = time.monotonic() + LEAD  # on the true-to-the-slot clock
    before = slot - timedelta(minutes=1)
    schedule = {"at": [before.strftime("%H:%M"), slot.strftime("%H:%M")], "timezone": "UTC"}
    offsets = {"a": offset, **{name: offset + skew for name, skew in SKEWED.items()}}
    with daemons(tmp_path) as procs:
        instances = start_instances(
            procs,
            tmp_path,
            pg_dsn,
            demo,
            ["a", "b", "c"],
            entities=["task"],
            initial_from=real - timedelta(hours=2),
            schedule=schedule,
            clock_offsets=offsets,
        )
        since = real - timedelta(minutes=5)

        def ok_runs() -> list[dict[str, object]]:
            return [r for r in runs(pg_dsn, "task") if r["status"] == "ok"]

        wait_for(lambda: len(ok_runs()) >= 1, WAIT, "the catch-up run of the slot before")
        time.sleep(max(0.0, slot_comes + max(SKEWED.values()) - time.monotonic()))
        # Every instance's clock has passed the slot: it runs once, and only once.
        wait_for(lambda: len(ok_runs()) >= 2, WAIT, "the run of the slot")
        time.sleep(1.0)  # a second run would show by now
        assert len(starts(pg_dsn, "task", since)) == 2, runs(pg_dsn, "task")
        [(last_slot,)] = query(pg_dsn, "SELECT last_slot FROM sync_state WHERE entity = 'task'")
        assert last_slot == slot
        beaten = sum(
            value_of(syncd.metrics(), "syncd_sync_skipped_total", entity="task", reason=reason) or 0
            for syncd in instances
            for reason in ("served", "locked")
        )
        assert beaten >= 2, "the two instances beaten to the slot counted no skip"
        for syncd in instances:
            syncd.send(signal.SIGTERM)
            assert syncd.wait_exit(WAIT) == 0
