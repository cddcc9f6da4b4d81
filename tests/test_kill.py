"""A real `syncd sync` process SIGKILLed at random points never loses a record.

The watermark moves only with the data of its window (docs/configuration.md, "Windows
and the watermark"), so a crash at any instant leaves everything below the watermark
stored, and the next run closes the dead run's `sync_time` row as interrupted and
carries on."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.demo_config import demo_config
from devtools.demo_source import DemoSource
from tests.support import (
    missing_below_watermark,
    query,
    versions_in_db,
    versions_in_source,
    watermark,
    write_config,
)

TASKS = 20_000
KILLS = 6
SEED = 20261129


def syncd_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "syncd", "-c", str(config), "sync", "task"]


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.01)


def syncd_sessions(dsn: str) -> int:
    """Server sessions of syncd processes on this database (a dead client's backend
    lingers until the server notices; until then it may still hold the entity lock)."""
    [(count,)] = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'syncd'",
    )
    return int(count)


def sync_then_kill(config: Path, demo: DemoSource, wanted: int, extra: float, log: Path) -> bool:
    """Start `syncd sync task`, SIGKILL it `extra` seconds after it has made `wanted`
    requests. True if it was still running when killed (not finished on its own)."""
    before = demo.request_count("task")
    with log.open("w") as out:
        proc = subprocess.Popen(syncd_command(config), stdout=out, stderr=out, env=child_env())
        try:
            wait_for(
                lambda: proc.poll() is not None or demo.request_count("task") - before >= wanted,
                timeout=20,
                what=f"{wanted} requests from syncd",
            )
            time.sleep(extra)
            return proc.poll() is None
        finally:
            proc.send_signal(signal.SIGKILL)  # a no-op once it has exited and been reaped
            proc.wait(timeout=10)


def test_sigkill_at_random_points_loses_nothing_and_the_next_run_completes(
    tmp_path: Path, pg_dsn: str
) -> None:
    """Six kills mid-paging: nothing below the watermark is ever missing, the watermark
    never moves back, and a final run leaves the table equal to the source."""
    now = datetime.now(UTC)
    rng = random.Random(SEED)
    demo = DemoSource(
        counts={"task": TASKS, "inspection": 0, "user": 0, "entity": 0},
        start=now - timedelta(days=60),
        end=now - timedelta(minutes=5),
        seed=SEED,
    ).start()
    try:
        data = demo_config(
            pg_dsn,
            demo.base_url,
            entities=["task"],
            initial_from=(now - timedelta(days=61)).strftime("%Y-%m-%d %H:%M:%S"),
        )
        data["source"]["page_size"] = 200
        data["entities"]["task"]["window"].update(max="5d", lookback="1m")
        config = write_config(tmp_path, data)
        keys = [record["TaskId"] for record in demo.records("task")]
        churn_rng = random.Random(SEED + 1)

        def churn(entity: str, params: dict[str, str]) -> None:
            """Between pages: one record updated (it leaves its window), one created."""
            demo.update("task", churn_rng.choice(keys))
            keys.append(demo.insert("task")["TaskId"])

        demo.on_request = churn

        marks: list[datetime | None] = []
        killed_mid_sync = 0
        for round_ in range(KILLS):
            wanted = rng.randint(2, 30)  # pages to let it read before the kill
            extra = rng.uniform(0.0, 0.15)  # then land anywhere in a page's write or commit
            log_path = tmp_path / f"kill-{round_}.log"
            killed_mid_sync += sync_then_kill(config, demo, wanted, extra, log_path)
            # Until its server session is gone, a commit the dead process sent may land.
            wait_for(lambda: syncd_sessions(pg_dsn) == 0, timeout=10, what="backends to exit")

            assert missing_below_watermark(pg_dsn, demo, "task") == {}, f"after kill {round_}"
            mark = watermark(pg_dsn, "task")
            previous = next((m for m in reversed(marks) if m is not None), None)
            if previous is not None:
                assert mark is not None and mark >= previous, f"moved back at kill {round_}"
            marks.append(mark)

        assert killed_mid_sync >= KILLS - 1, "the runs finished before they could be killed"
        assert any(m is not None for m in marks), "no kill came after a committed piece"

        # Churn stops; the final run's toTime (whole seconds) must be past the last change.
        demo.on_request = None
        last_change = max(versions_in_source(demo, "task").values())
        wait_for(
            lambda: datetime.now(UTC) >= last_change.replace(microsecond=0) + timedelta(seconds=1),
            timeout=2,
            what="the clock to pass the last change",
        )
        done = subprocess.run(
            syncd_command(config), capture_output=True, text=True, timeout=60, env=child_env()
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("task: ok: "), done.stdout

        assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
        runs = query(pg_dsn, "SELECT status, error FROM sync_time ORDER BY id")
        assert [status for status, _ in runs].count("running") == 0
        assert runs[-1] == ("ok", None)
        interrupted = [error for status, error in runs if status == "failed"]
        assert interrupted, "no killed run had started its sync_time row"
        assert all(error.startswith("interrupted") for error in interrupted), interrupted
    finally:
        demo.on_request = None
        demo.stop()
