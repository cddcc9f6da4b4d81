"""`syncd rewind ENTITY --to TS`: the watermark moves back, and a run in progress cannot
undo it (an `UPDATE sync_state` by hand was silently undone by the run's commit)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.demo_source import DemoSource
from syncd.db.schema import migrate
from syncd.sync.incremental import RunResult
from tests.daemon_support import child_env
from tests.support import MakeDemo, connection, demo_setup, make_engine, sync_once, watermark

NOW = datetime.now(UTC).replace(microsecond=0)
REWIND_TO = (NOW - timedelta(days=2)).replace(minute=0, second=0)


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    return make_demo(
        counts={"task": 200, "inspection": 0, "user": 0, "entity": 0},
        start=NOW - timedelta(days=5),
        end=NOW - timedelta(hours=1),
    )


def rewind(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(config), "rewind", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


def test_rewind_moves_the_watermark_back_and_says_from_where(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    assert sync_once(config, "task").outcome == "ok"
    before = watermark(pg_dsn, "task")
    assert before is not None

    done = rewind(config.path, "task", "--to", REWIND_TO.strftime("%Y-%m-%d %H:%M:%S"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"task: watermark {before.isoformat()} -> {REWIND_TO.isoformat()}"
    assert watermark(pg_dsn, "task") == REWIND_TO


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["nope", "--to", "2026-01-01"], 2, "unknown entity 'nope'"),
        (["task", "--to", "yesterday"], 2, "--to: 'yesterday' is not a timestamp"),
        (["task"], 2, "the following arguments are required: --to"),
        (["task", "--to", "2999-01-01"], 2, "is in the future"),
    ],
)
def test_rewind_refuses_what_it_cannot_do(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, args: list[str], status: int, message: str
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    done = rewind(config.path, *args)
    assert done.returncode == status, done.stderr
    assert message in done.stderr


def test_moving_the_watermark_forward_takes_forward(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Forward skips every record in between: a typo must not do that silently."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    assert sync_once(config, "task").outcome == "ok"
    back = rewind(config.path, "task", "--to", REWIND_TO.isoformat())
    assert back.returncode == 0, back.stderr
    ahead = (REWIND_TO + timedelta(days=1)).isoformat()
    refused = rewind(config.path, "task", "--to", ahead)
    assert refused.returncode == 2 and "moving it forward skips" in refused.stderr
    assert watermark(pg_dsn, "task") == REWIND_TO
    forced = rewind(config.path, "task", "--to", ahead, "--forward")
    assert forced.returncode == 0, forced.stderr
    assert watermark(pg_dsn, "task") == REWIND_TO + timedelta(days=1)


def test_rewind_of_an_entity_that_never_synced_says_so(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    with connection(pg_dsn) as conn:
        migrate(conn, config)
    done = rewind(config.path, "task", "--to", "2026-01-01")
    assert done.returncode == 2
    assert "task has no watermark yet" in done.stderr


def test_a_rewind_waits_for_the_run_in_progress_and_is_not_undone_by_it(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The run holds the entity's lock while it pages; the rewind waits for it, then
    wins: the run's own watermark commit comes first, the rewind after."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    assert sync_once(config, "task").outcome == "ok"
    held, release = threading.Event(), threading.Event()

    def hold_the_first_request(entity: str, params: dict[str, str]) -> None:
        if not held.is_set():
            held.set()
            release.wait(30)

    demo.on_request = hold_the_first_request
    result: list[RunResult] = []
    run = threading.Thread(target=lambda: result.append(make_engine(config).sync_entity("task")))
    run.start()
    try:
        assert held.wait(10), "the run never asked the source"
        busy = rewind(config.path, "task", "--to", REWIND_TO.isoformat(), "--wait", "0.5")
        assert busy.returncode == 1
        assert "a run of task still holds its lock after 0.5s" in busy.stderr

        command = [sys.executable, "-m", "syncd", "-c", str(config.path), "rewind", "task"]
        waiting = subprocess.Popen(
            [*command, "--to", REWIND_TO.isoformat(), "--wait", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            waiting.wait(1.5)
        assert waiting.poll() is None, "the rewind did not wait for the run"
    finally:
        release.set()
        run.join(30)
        demo.on_request = None
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert result and result[0].outcome == "ok"
    assert watermark(pg_dsn, "task") == REWIND_TO
