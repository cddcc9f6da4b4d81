"""The command line as an operator meets it: `python -m syncd ...` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_config import demo_config
from devtools.demo_source import DemoSource
from devtools.devcluster import free_port
from syncd import __version__
from tests.support import MakeDemo, query, versions_in_db, versions_in_source, write_config

NOW = datetime.now(UTC)
DATA_END = NOW - timedelta(hours=1)
INITIAL_FROM = (DATA_END - timedelta(days=11)).strftime("%Y-%m-%d %H:%M:%S")
OWN_TABLES = {"sync_time", "sync_state", "sync_rejects"}


def syncd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def has_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text


def plain_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what is meant for a person."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    return make_demo(
        counts={"task": 250, "inspection": 0, "user": 40, "entity": 0},
        start=DATA_END - timedelta(days=10),
        end=DATA_END,
    )


def config_data(dsn: str, base_url: str) -> dict[str, Any]:
    data = demo_config(dsn, base_url, entities=["task", "user"], initial_from=INITIAL_FROM)
    data["source"]["page_size"] = 100
    data["source"]["retries"] = {"attempts": 2, "backoff": "10ms", "max_backoff": "50ms"}
    for entity in data["entities"].values():
        entity["window"]["max"] = "30d"
    return data


@pytest.fixture
def config(tmp_path: Path, pg_dsn: str, demo: DemoSource) -> Path:
    return write_config(tmp_path, config_data(pg_dsn, demo.base_url))


def tables(dsn: str) -> set[str]:
    rows = query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name for (name,) in rows}


# --- no configuration needed --------------------------------------------------------------


def test_version_prints_the_version_and_exits_0() -> None:
    """`syncd --version` prints `syncd X.Y.Z`."""
    done = syncd("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"syncd {__version__}"


def test_no_arguments_is_a_usage_error() -> None:
    """No command: exit 2 with argparse's usage on stderr."""
    done = syncd()
    assert done.returncode == 2
    assert done.stderr.startswith("usage: syncd")


# --- check-config ---------------------------------------------------------------------------


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    """A valid file: exit 0 without touching the database or the source."""
    data = config_data(f"postgresql://postgres@127.0.0.1:{free_port()}/x", "http://127.0.0.1:9")
    path = write_config(tmp_path, data)
    done = syncd("-c", str(path), "check-config")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_check_config_names_file_line_and_key_path_of_every_problem(tmp_path: Path) -> None:
    """Each problem is one `FILE:LINE: key.path: message` line; exit 2."""
    data = config_data("postgresql://postgres@127.0.0.1:1/x", "http://127.0.0.1:9")
    data["source"]["page_size"] = "lots"
    data["entities"]["task"]["columns"]["title"]["type"] = "varchar"
    data["entities"]["user"]["colour"] = "blue"
    path = write_config(tmp_path, data)
    text = path.read_text().splitlines()

    def line_of(fragment: str) -> int:
        [number] = [n for n, line in enumerate(text, start=1) if line.strip() == fragment]
        return number

    done = syncd("-c", str(path), "check-config")

    assert done.returncode == 2
    assert done.stdout == ""
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): ([\w.]+): (.+)$")
    lines = done.stderr.splitlines()
    found = {}
    for line in lines:
        match = pattern.match(line)
        assert match, f"not FILE:LINE: key.path: message: {line!r}"
        found[match[2]] = int(match[1])
    assert found == {
        "source.page_size": line_of("page_size: lots"),
        "entities.task.columns.title.type": line_of("type: varchar"),
        "entities.user.colour": line_of("colour: blue"),
    }


def test_check_config_on_a_missing_file_says_so_in_one_line(tmp_path: Path) -> None:
    """A missing file: exit 2, one line naming the file."""
    missing = tmp_path / "nowhere.yaml"
    done = syncd("-c", str(missing), "check-config")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert str(missing) in line
    assert not has_traceback(done.stderr)


# --- sync -----------------------------------------------------------------------------------


def test_sync_prints_one_ok_line_per_entity(config: Path, pg_dsn: str, demo: DemoSource) -> None:
    """`sync`: migrates, syncs every entity, one `NAME: ok: ...` line each, exit 0."""
    done = syncd("-c", str(config), "sync")

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["task", "user"]
    assert all(re.match(r"^(task|user): ok: ", line) for line in lines), lines
    task_line = next(line for line in lines if line.startswith("task:"))
    assert "250 fetched" in task_line
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    assert versions_in_db(pg_dsn, "user") == versions_in_source(demo, "user")


def test_sync_of_named_entities_syncs_only_those(config: Path, pg_dsn: str) -> None:
    """`sync user` leaves task alone."""
    done = syncd("-c", str(config), "sync", "user")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("user: ok: ")
    assert len(done.stdout.splitlines()) == 1
    assert query(pg_dsn, "SELECT DISTINCT entity FROM sync_time") == [("user",)]


def test_sync_of_an_unknown_entity_is_a_usage_error(config: Path, pg_dsn: str) -> None:
    """`sync nosuch`: exit 2, one line naming it, nothing run."""
    done = syncd("-c", str(config), "sync", "nosuch")
    assert done.returncode == 2
    [line] = plain_lines(done.stderr)
    assert "nosuch" in line
    assert done.stdout == ""
    assert "sync_time" not in tables(pg_dsn)


def test_a_failed_run_exits_1_with_a_failed_line_and_no_traceback(
    config: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The source answers 500 every time: `task: failed: ...`, exit 1, no traceback."""
    demo.fail_next(1000, 500, entity="task")
    done = syncd("-c", str(config), "sync", "task")

    assert done.returncode == 1
    [line] = done.stdout.splitlines()
    assert line.startswith("task: failed: ")
    assert "after 2 tries" in line
    assert not has_traceback(done.stderr)
    assert demo.request_count("task") == 2


def test_one_failed_entity_fails_the_pass_but_not_the_others(
    config: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """task fails, user still syncs: exit 1, one line each."""
    demo.fail_next(1000, 500, entity="task")
    done = syncd("-c", str(config), "sync")
    assert done.returncode == 1
    lines = sorted(done.stdout.splitlines())
    assert lines[0].startswith("task: failed: ")
    assert lines[1].startswith("user: ok: ")


# --- status -----------------------------------------------------------------------------------


def status_json(config: Path) -> list[dict[str, Any]]:
    done = syncd("-c", str(config), "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert isinstance(report, list)
    return report


def test_status_json_before_any_run(config: Path) -> None:
    """Every configured entity is listed, with nulls where nothing has happened yet."""
    assert syncd("-c", str(config), "migrate").returncode == 0
    report = status_json(config)
    assert [item["entity"] for item in report] == ["task", "user"]
    for item in report:
        assert item["watermark"] is None
        assert item["last_status"] is None
        assert item["last_finished_at"] is None
        assert item["last_error"] is None


def test_status_json_on_a_database_syncd_has_never_touched(config: Path) -> None:
    """A fresh install (no migrate, no run yet): every entity with nulls, exit 0."""
    report = status_json(config)
    assert [item["entity"] for item in report] == ["task", "user"]
    for item in report:
        assert item["watermark"] is None
        assert item["last_status"] is None
        assert item["last_error"] is None


def test_status_json_after_an_ok_and_a_failed_run(
    config: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """watermark and last_finished_at are ISO 8601; a failed run shows its error."""
    assert syncd("-c", str(config), "sync").returncode == 0
    demo.fail_next(1000, 500, entity="user")
    assert syncd("-c", str(config), "sync", "user").returncode == 1

    by_name = {item["entity"]: item for item in status_json(config)}
    task, user = by_name["task"], by_name["user"]
    [(stored,)] = query(pg_dsn, "SELECT watermark FROM sync_state WHERE entity = 'task'")
    assert datetime.fromisoformat(task["watermark"]) == stored
    assert task["last_status"] == "ok"
    assert datetime.fromisoformat(task["last_finished_at"]).tzinfo is not None
    assert task["last_error"] is None
    assert user["last_status"] == "failed"
    assert "after 2 tries" in user["last_error"]
    assert datetime.fromisoformat(user["watermark"]) is not None  # kept from the ok run


def test_status_as_a_table_names_every_entity(config: Path) -> None:
    """Plain `status` exits 0 and mentions each entity."""
    assert syncd("-c", str(config), "sync").returncode == 0
    done = syncd("-c", str(config), "status")
    assert done.returncode == 0, done.stderr
    assert "task" in done.stdout
    assert "user" in done.stdout


# --- migrate -----------------------------------------------------------------------------------


COLUMNS = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'public' ORDER BY 1, 2"
)


def test_migrate_creates_the_tables_and_is_idempotent(config: Path, pg_dsn: str) -> None:
    """`migrate` twice: the tables exist after the first, the second changes nothing."""
    first = syncd("-c", str(config), "migrate")
    assert first.returncode == 0, first.stderr
    assert tables(pg_dsn) == OWN_TABLES | {"task_details", "user_details"}
    columns = query(pg_dsn, COLUMNS)

    second = syncd("-c", str(config), "migrate")
    assert second.returncode == 0, second.stderr
    assert "(0 changes)" in second.stdout
    assert tables(pg_dsn) == OWN_TABLES | {"task_details", "user_details"}
    assert query(pg_dsn, COLUMNS) == columns


def test_migrate_refuses_a_column_whose_type_changed_in_the_yaml(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, config: Path
) -> None:
    """title text in the table, integer in the YAML: non-zero, one line naming the key."""
    assert syncd("-c", str(config), "migrate").returncode == 0
    data = config_data(pg_dsn, demo.base_url)
    data["entities"]["task"]["columns"]["title"]["type"] = "integer"
    changed = write_config(tmp_path, data, name="changed.yaml")

    done = syncd("-c", str(changed), "migrate")

    assert done.returncode != 0
    [line] = plain_lines(done.stderr)
    assert "entities.task.columns.title.type" in line
    assert not has_traceback(done.stderr)
    [(kind,)] = query(
        pg_dsn,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'task_details' AND column_name = 'title'",
    )
    assert kind == "text"  # never converted


# --- the database out of reach -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sync"], ["status"], ["status", "--json"], ["migrate"]])
def test_an_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, demo: DemoSource, command: list[str]
) -> None:
    """Nothing listens at the DSN: `syncd: database: ...` on one line, exit 1."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    path = write_config(tmp_path, config_data(dsn, demo.base_url))
    done = syncd("-c", str(path), *command)

    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("syncd: database: ")
    assert done.stdout == ""
    assert demo.request_count() == 0


def test_debug_shows_the_traceback(tmp_path: Path, demo: DemoSource) -> None:
    """--debug: the same failure comes with its traceback."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    path = write_config(tmp_path, config_data(dsn, demo.base_url))
    done = syncd("-c", str(path), "--debug", "sync")
    assert done.returncode != 0
    assert has_traceback(done.stderr)
