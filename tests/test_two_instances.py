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
from devtools.devcluster import free_port
from syncd.service.preloads import LOCKED_RECHECK
from tests.daemon_support import (
    TIME_FORMAT,
    WAIT,
    daemon_config,
    daemons,
    db_now,
    ok_runs_since,
    runs,
    start_instances,
    value_of,
    wait_for,
)
from tests.support import query, versions_in_db, versions_in_source, write_config
from tests.test_preload import assert_tiles, month_start

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


PRELOAD_MONTHS = 12
PRELOAD_DELAY = 0.15  # seconds per source request: the preload takes several seconds


def preload_rows(dsn: str) -> list[dict[str, Any]]:
    return [r for r in runs(dsn, "task") if r["kind"] == "preload"]


def test_two_instances_never_plan_one_preload_chunk_twice_and_resume_a_killed_ones(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A year preloaded in monthly chunks by two instances: one holds the preload's
    lock and plans under it, the other finds it held. The holder is killed (-9) in
    the middle: the other resumes from the last chunk it committed within seconds,
    closes the killed chunk as interrupted, and every chunk ends `ok` exactly once,
    the chunks tiling the range; every record is stored."""
    now = datetime.now(UTC)
    data_from = month_start(now - timedelta(days=30 * PRELOAD_MONTHS))
    demo = DemoSource(
        counts={"task": 40 * PRELOAD_MONTHS, "inspection": 0, "user": 0, "entity": 0},
        start=data_from,
        end=now - timedelta(hours=1),
        seed=31,
    ).start()
    demo.on_request = lambda entity, params: time.sleep(PRELOAD_DELAY)
    try:
        with daemons(tmp_path) as procs:
            instances = []
            for name in ("a", "b"):
                port = free_port()
                data = daemon_config(
                    pg_dsn, demo, port, entities=["task"], initial_from=data_from, every="1m"
                )
                task = data["entities"]["task"]
                del task["window"]["initial_from"]
                task["preload"] = {"from": data_from.strftime(TIME_FORMAT), "chunk": "1mo"}
                data["source"]["page_size"] = 10
                config = write_config(tmp_path, data, name=f"{name}.yaml")
                instances.append(procs.start(config, port, name=name))
            for syncd in instances:
                syncd.wait_ready()

            def holder_with_two_chunks() -> int | None:
                rows = preload_rows(pg_dsn)
                for pid in {r["pid"] for r in rows if r["status"] == "running"}:
                    if sum(r["pid"] == pid and r["status"] == "ok" for r in rows) >= 2:
                        return int(pid)
                return None

            wait_for(holder_with_two_chunks, 3 * WAIT, "one instance two chunks into the preload")
            holder = holder_with_two_chunks()
            [victim] = [s for s in instances if s.pid == holder]
            [survivor] = [s for s in instances if s.pid != holder]
            victim.send(signal.SIGKILL)
            victim.wait_exit(WAIT)
            killed_at = db_now(pg_dsn)

            def resumed() -> bool:
                return any(
                    r["pid"] == survivor.pid and r["started_at"] > killed_at
                    for r in preload_rows(pg_dsn)
                )

            wait_for(resumed, LOCKED_RECHECK + WAIT, "the other instance to resume the preload")

            def done() -> bool:
                [(done_to, end)] = query(
                    pg_dsn, "SELECT preload_done_to, preload_end FROM sync_state"
                )
                return done_to is not None and done_to == end

            wait_for(done, 6 * WAIT, "the preload to complete")
            survivor.send(signal.SIGTERM)
            assert survivor.wait_exit(WAIT) == 0

        rows = preload_rows(pg_dsn)
        [(end,)] = query(pg_dsn, "SELECT preload_end FROM sync_state")
        assert_tiles(
            [(r["window_from"], r["window_to"]) for r in rows if r["status"] == "ok"],
            data_from,
            end,
        )
        assert {r["pid"] for r in rows if r["status"] == "ok"} == {victim.pid, survivor.pid}
        [killed] = [r for r in rows if r["status"] != "ok"]
        assert (killed["pid"], killed["status"]) == (victim.pid, "failed"), killed
        assert "interrupted" in (killed["error"] or ""), killed
        assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    finally:
        demo.on_request = None
        demo.stop()
