"""Two `syncd run` processes on one database ("Several instances" in docs/operations.md).

An entity's run holds a PostgreSQL advisory lock: the instances never sync the same
entity at once, the one that finds the lock taken skips (and counts it), and when one
instance dies the other carries every entity on its own, losing nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

from devtools.demo_source import DemoSource
from tests.daemon_support import (
    WAIT,
    daemons,
    db_now,
    ok_runs_since,
    runs,
    start_instances,
    value_of,
    wait_for,
)
from tests.support import versions_in_db, versions_in_source

ENTITIES = ["task", "inspection", "user", "entity"]
COUNTS = {"task": 300, "inspection": 200, "user": 40, "entity": 20}
OBSERVE = 8.0  # seconds both instances run side by side
# Each source request takes this long, so a run lasts longer than half its 1 s
# interval: whatever the phase between the two instances, their runs of an entity
# keep coming due while the other one holds it, and one of them has to skip.
REQUEST_DELAY = 0.6
CHURN = 20.0  # source changes per second


def overlaps(dsn: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of runs of one entity by different processes whose [started_at,
    finished_at) intersect; a run still open counts as lasting until now."""
    found = []
    for entity in ENTITIES:
        rows = runs(dsn, entity)
        for one, two in combinations(rows, 2):
            if one["pid"] == two["pid"]:
                continue
            end_one = one["finished_at"] or datetime.max.replace(tzinfo=UTC)
            end_two = two["finished_at"] or datetime.max.replace(tzinfo=UTC)
            if max(one["started_at"], two["started_at"]) < min(end_one, end_two):
                found.append((one, two))
    return found


def read_past(dsn: str, entity: str, moment: datetime, pid: int) -> bool:
    """Whether `pid` finished a run of `entity` whose window ended after `moment`."""
    return any(
        r["status"] == "ok" and r["pid"] == pid and r["window_to"] > moment
        for r in runs(dsn, entity)
        if r["window_to"] is not None
    )


def settled(demo: DemoSource) -> Callable[[], bool]:
    """A condition: the source did not change since the previous call."""
    last: list[Any] = [None]

    def check() -> bool:
        now = {entity: versions_in_source(demo, entity) for entity in ENTITIES}
        same: bool = now == last[0]
        last[0] = now
        return same

    return check


def test_two_instances_share_the_entities_and_one_carries_on_alone(
    tmp_path: Path, pg_dsn: str
) -> None:
    now = datetime.now(UTC)
    demo = DemoSource(
        counts=COUNTS,
        start=now - timedelta(days=2),
        end=now - timedelta(minutes=1),
        churn_per_second=CHURN,
        seed=29,
    ).start()
    demo.on_request = lambda entity, params: time.sleep(REQUEST_DELAY)
    try:
        with daemons(tmp_path) as procs:
            instances = start_instances(
                procs,
                tmp_path,
                pg_dsn,
                demo,
                ["a", "b"],
                entities=ENTITIES,
                initial_from=now - timedelta(days=2, hours=1),
            )

            # Side by side for a while: never both on one entity.
            deadline = time.monotonic() + OBSERVE
            while time.monotonic() < deadline:
                assert all(s.alive() for s in instances), "an instance died"
                time.sleep(0.2)
            assert overlaps(pg_dsn) == []
            skipped, worked = {}, {}
            for syncd in instances:
                found = syncd.metrics()
                skipped[syncd.pid] = sum(
                    value_of(found, "syncd_sync_skipped_total", entity=e, reason=reason) or 0
                    for e in ENTITIES
                    for reason in ("locked", "served")
                )
                worked[syncd.pid] = sum(1 for r in runs(pg_dsn) if r["pid"] == syncd.pid)
            assert sum(skipped.values()) > 0, f"no run was ever skipped: {skipped}"
            for syncd in instances:
                assert worked[syncd.pid] + skipped[syncd.pid] > 0, (worked, skipped)

            # The busier one dies; the other carries every entity.
            victim, survivor = sorted(instances, key=lambda s: worked[s.pid], reverse=True)
            victim.send(signal.SIGKILL)
            victim.wait_exit(WAIT)
            killed_at = db_now(pg_dsn)
            for entity in ENTITIES:
                wait_for(
                    partial(ok_runs_since, pg_dsn, entity, killed_at, pid=survivor.pid),
                    WAIT,
                    f"the survivor to sync {entity} after the kill",
                )

            # Churn stops; a pass that reads past the last change leaves the tables equal.
            demo.churn_per_second = 0
            demo.on_request = None
            wait_for(settled(demo), WAIT, "the source to stop changing", every=0.3)
            last_change = max(max(versions_in_source(demo, entity).values()) for entity in ENTITIES)
            for entity in ENTITIES:
                wait_for(
                    partial(read_past, pg_dsn, entity, last_change, survivor.pid),
                    WAIT,
                    f"a run of {entity} reading past the last change",
                )
            survivor.send(signal.SIGTERM)
            assert survivor.wait_exit(WAIT) == 0

        for entity in ENTITIES:
            assert versions_in_db(pg_dsn, entity) == versions_in_source(demo, entity), entity
        assert overlaps(pg_dsn) == []
        left = [r for r in runs(pg_dsn) if r["status"] == "running"]
        assert left == [], f"runs left running: {left}"
    finally:
        demo.on_request = None
        demo.stop()
