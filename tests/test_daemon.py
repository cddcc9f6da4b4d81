"""`syncd run` as systemd runs it (docs/operations.md), on a real process.

Each test starts `python -m syncd -c FILE run` with a bound AF_UNIX datagram socket as
NOTIFY_SOCKET, the demo source in this process, a throwaway PostgreSQL database and
`http.listen` on a free port, and reads back what systemd, Prometheus and an operator
would see. Every wait has a deadline; leftover processes are killed at teardown.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_source import DemoSource
from devtools.devcluster import free_port
from tests.daemon_support import (
    WAIT,
    Daemons,
    child_env,
    daemon_config,
    db_now,
    is_ready,
    ok_runs_since,
    runs,
    samples,
    value_of,
    wait_for,
)
from tests.support import (
    MakeDemo,
    connection,
    missing_below_watermark,
    query,
    versions_in_db,
    versions_in_source,
    watermark,
    write_config,
)

SMALL = {"task": 300, "inspection": 200, "user": 40, "entity": 20}
SPAN = timedelta(days=2)
EVER = datetime.min.replace(tzinfo=UTC)

# The metrics of docs/operations.md: (the sample to look for, whether it has an `entity` label).
FAMILIES = [
    ("syncd_sync_runs_total", True),
    ("syncd_records_fetched_total", True),
    ("syncd_records_written_total", True),
    ("syncd_records_rejected_total", True),
    ("syncd_sync_duration_seconds_count", True),
    ("syncd_source_requests_total", True),
    ("syncd_source_request_duration_seconds_count", True),
    ("syncd_watermark_timestamp_seconds", True),
    ("syncd_last_success_timestamp_seconds", True),
    ("syncd_preload_progress_ratio", True),
    ("syncd_config_last_reload_successful", False),
    ("syncd_build_info", False),
]


@pytest.fixture
def make_demo(make_demo: MakeDemo) -> MakeDemo:
    """conftest's make_demo, by default with small data over the last two days."""

    def make(**kwargs: Any) -> DemoSource:
        now = datetime.now(UTC)
        kwargs.setdefault("counts", SMALL)
        kwargs.setdefault("start", now - SPAN)
        kwargs.setdefault("end", now - timedelta(minutes=1))
        return make_demo(**kwargs)

    return make


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    return make_demo()


def initial_from() -> datetime:
    return datetime.now(UTC) - SPAN - timedelta(hours=1)


def config_for(
    dsn: str, demo: DemoSource, entities: list[str], **kwargs: Any
) -> tuple[dict[str, Any], int]:
    """The demo configuration for `entities` (every 1s by default) and its free port."""
    port = free_port()
    data = daemon_config(dsn, demo, port, entities=entities, initial_from=initial_from(), **kwargs)
    return data, port


def wait_ok(dsn: str, entities: list[str], after: datetime, timeout: float = WAIT) -> None:
    """Until every entity has an ok run that started after `after`."""
    for entity in entities:
        wait_for(
            partial(ok_runs_since, dsn, entity, after),
            timeout,
            f"an ok run of {entity} started after {after}",
        )


def table_count(dsn: str, table: str) -> int:
    [(count,)] = query(dsn, f"SELECT count(*) FROM {table}")
    return int(count)


# --- 1. READY=1 -----------------------------------------------------------------------


def test_ready_comes_when_readyz_answers_and_every_metric_family_is_there(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """At READY=1 /readyz is already 200 and /metrics has every metric family of
    docs/operations.md#metrics with a series per entity, before any source request was
    answered (the source holds them all)."""
    gate = threading.Event()

    def hold(entity: str, params: dict[str, str]) -> None:
        gate.wait(WAIT)

    demo.on_request = hold
    entities = ["task", "inspection", "user", "entity"]
    data, port = config_for(pg_dsn, demo, entities)
    try:
        syncd = procs.start(write_config(tmp_path, data), port)
        ready = syncd.wait_ready()
        readyz = syncd.get("/readyz")
        text = syncd.metrics_text()
        answered = demo.request_count()
    finally:
        gate.set()
    assert ready.get("STATUS"), f"READY=1 without a STATUS= line: {ready}"
    assert readyz.status == 200, readyz
    assert answered == 0, "a source request was answered before the scrape"

    found = samples(text)
    missing = []
    for name, per_entity in FAMILIES:
        if not per_entity:
            if not any(sample[0] == name for sample in found):
                missing.append(name)
            continue
        missing += [
            f"{name}{{entity={e!r}}}" for e in entities if value_of(found, name, entity=e) is None
        ]
    assert value_of(found, "syncd_config_last_reload_successful") == 1
    assert any(s[0] == "syncd_build_info" and s[1].get("version") for s in found)
    assert missing == [], f"at READY=1, /metrics lacks: {missing}"


# --- 2. the watchdog ------------------------------------------------------------------


def test_watchdog_pings_keep_coming_only_when_watchdog_usec_is_set(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """WATCHDOG_USEC=200000: WATCHDOG=1 at least every 100 ms; none without it, nor when
    WATCHDOG_PID names another process. Three instances side by side, watched at once."""
    starts = {}
    for name, env in (
        ("watched", {"WATCHDOG_USEC": "200000"}),
        ("unwatched", {}),
        ("other_pid", {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}),
    ):
        data, port = config_for(pg_dsn, demo, ["user"])
        config = write_config(tmp_path, data, name=f"{name}.yaml")
        starts[name] = procs.start(config, port, env=env, name=name)
    for syncd in starts.values():
        syncd.wait_ready()

    watched = starts["watched"].notify.collect(2.0)
    pings = [m for m in watched if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 5, f"{len(pings)} WATCHDOG=1 in 2 s with WATCHDOG_USEC=200000"

    for name in ("unwatched", "other_pid"):
        notify = starts[name].notify
        notify.collect(0.2)  # what queued up while the watched one was read
        pings = [m for m in notify.messages if m.get("WATCHDOG") == "1"]
        assert pings == [], f"{name}: WATCHDOG=1 sent: {len(pings)}"


# --- 3 and 4. SIGHUP ------------------------------------------------------------------


def reloading(message: dict[str, str]) -> bool:
    return message.get("RELOADING") == "1"


def test_sighup_adds_changes_and_removes_entities(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """task stays, inspection gets a new schedule and a new column, user goes, entity
    comes: all without a restart, between RELOADING=1 and READY=1."""
    data, port = config_for(pg_dsn, demo, ["task", "inspection", "user"])
    del data["entities"]["inspection"]["columns"]["notes"]
    config = write_config(tmp_path, data)
    syncd = procs.start(config, port)
    syncd.wait_ready()
    wait_ok(pg_dsn, ["task", "inspection", "user"], EVER)

    new, _ = config_for(pg_dsn, demo, ["task", "inspection", "entity"])
    new["http"] = data["http"]
    new["entities"]["inspection"]["schedule"] = {"every": "2s"}
    write_config(tmp_path, new)
    syncd.send(signal.SIGHUP)
    begin = syncd.notify.wait_for(reloading, WAIT, "RELOADING=1")
    usec = begin.get("MONOTONIC_USEC", "")
    assert usec.isdigit() and int(usec) > 0, f"RELOADING=1 without MONOTONIC_USEC: {begin}"
    done = syncd.notify.wait_for(is_ready, WAIT, "READY=1 after the reload")
    assert "refused" not in done.get("STATUS", ""), done
    reloaded_at = db_now(pg_dsn)
    marker = demo.insert("inspection", {"Notes": "noted after the reload"})

    # The added entity: its table is created and filled.
    wanted = demo.record_count("entity")
    wait_for(
        lambda: (
            query(pg_dsn, "SELECT to_regclass('entity_details')")[0][0] is not None
            and table_count(pg_dsn, "entity_details") == wanted
        ),
        WAIT,
        f"entity_details to hold the {wanted} source records",
    )
    # The changed entity: the new column exists and is filled by the new config's runs.
    marker_id = marker["InspectionId"]
    wait_for(
        lambda: (
            query(
                pg_dsn,
                "SELECT notes FROM inspection_details WHERE inspection_id = %s",
                (marker_id,),
            )
            == [("noted after the reload",)]
        ),
        WAIT,
        "the new inspection column to be synced",
    )
    # ... and its new schedule: runs two seconds apart, where task's are one.
    starts = wait_for(
        lambda: (
            [
                r["started_at"]
                for r in runs(pg_dsn, "inspection")
                if r["started_at"] > reloaded_at and r["status"] == "ok"
            ][-2:]
            if ok_runs_since(pg_dsn, "inspection", reloaded_at) >= 2
            else None
        ),
        WAIT,
        "two inspection runs after the reload",
    )
    assert starts[1] - starts[0] >= timedelta(seconds=1.5), starts
    wait_ok(pg_dsn, ["task", "entity"], reloaded_at)

    status = syncd.get("/status")
    assert status.status == 200, status
    assert sorted(item["entity"] for item in status.json()) == ["entity", "inspection", "task"]

    # The removed entity: nothing of it started after the reload (2 s have passed at
    # least, two of its old intervals).
    assert db_now(pg_dsn) - reloaded_at >= timedelta(seconds=1.5)
    late = [r for r in runs(pg_dsn, "user") if r["started_at"] > reloaded_at]
    assert late == [], f"user was removed but still synced: {late}"

    found = syncd.metrics()
    assert value_of(found, "syncd_config_last_reload_successful") == 1
    assert value_of(found, "syncd_records_fetched_total", entity="entity") is not None
    assert syncd.alive()


def test_sighup_with_an_invalid_file_keeps_the_old_config(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    data, port = config_for(pg_dsn, demo, ["task", "user"])
    config = write_config(tmp_path, data)
    syncd = procs.start(config, port)
    syncd.wait_ready()
    wait_ok(pg_dsn, ["task", "user"], EVER)

    broken = json.loads(json.dumps(data))
    broken["entities"]["task"]["bogus_key"] = 1
    # Were this file applied, user would stop and an "inspection" would start.
    broken["entities"]["inspection"] = broken["entities"].pop("user")
    write_config(tmp_path, broken)
    syncd.send(signal.SIGHUP)
    syncd.notify.wait_for(reloading, WAIT, "RELOADING=1")
    done = syncd.notify.wait_for(is_ready, WAIT, "READY=1 after the refused reload")
    refused_at = db_now(pg_dsn)
    status = done.get("STATUS", "")
    assert "refused" in status, f"STATUS does not say the reload was refused: {status!r}"
    assert "entities.task.bogus_key" in status, f"STATUS does not say why: {status!r}"

    # The old config keeps running: both old entities get new runs.
    wait_ok(pg_dsn, ["task", "user"], refused_at)
    assert runs(pg_dsn, "inspection") == []
    found = syncd.metrics()
    assert value_of(found, "syncd_config_last_reload_successful") == 0
    assert syncd.get("/readyz").status == 200
    assert syncd.alive()


# --- 5 and 6. SIGTERM -----------------------------------------------------------------

BIG = 50_000


def stopping(message: dict[str, str]) -> bool:
    return message.get("STOPPING") == "1"


def test_sigterm_during_a_large_sync_commits_what_it_read_and_exits_0(
    tmp_path: Path, pg_dsn: str, make_demo: MakeDemo, procs: Daemons
) -> None:
    """50k tasks in pages of 200, 5 ms a request: SIGTERM well into the first run. The
    pages read are committed, nothing below the watermark is missing, the run is logged
    as stopped, and a later `syncd sync` finishes the job."""
    now = datetime.now(UTC)
    demo = make_demo(
        counts={"task": BIG, "inspection": 0, "user": 0, "entity": 0},
        start=now - timedelta(days=10),
        seed=5,
    )
    demo.on_request = lambda entity, params: time.sleep(0.005)
    port = free_port()
    data = daemon_config(
        pg_dsn, demo, port, entities=["task"], initial_from=now - timedelta(days=10, hours=1)
    )
    data["source"]["page_size"] = 200
    data["entities"]["task"]["window"]["max"] = "1d"  # ~25 pages a piece: pieces commit
    config = write_config(tmp_path, data)
    syncd = procs.start(config, port)
    syncd.wait_ready()
    wait_for(lambda: demo.request_count("task") >= 80, 30, "80 task requests")

    syncd.send(signal.SIGTERM)
    signalled = time.monotonic()
    syncd.notify.wait_for(stopping, WAIT, "STOPPING=1")
    assert syncd.wait_exit(30) == 0
    took = time.monotonic() - signalled
    assert took < 30

    rows = runs(pg_dsn, "task")
    assert [r["status"] for r in rows] == ["failed"], rows
    assert "stop" in (rows[0]["error"] or ""), rows[0]
    [(fetched, written)] = query(pg_dsn, "SELECT rows_fetched, rows_written FROM sync_time")
    stored = table_count(pg_dsn, "task_details")
    assert 0 < stored < BIG, "the run was not stopped midway"
    assert written == stored, f"sync_time says {written} written, the table holds {stored}"
    assert fetched >= written
    assert watermark(pg_dsn, "task") is not None, "no piece was committed before the stop"
    assert missing_below_watermark(pg_dsn, demo, "task") == {}

    demo.on_request = None
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(config), "sync", "task"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("task: ok: "), done.stdout
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    assert [r["status"] for r in runs(pg_dsn, "task")] == ["failed", "ok"]


def test_a_second_sigterm_while_draining_exits_at_once(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """The first SIGTERM waits for a page being written (here held back by a lock on
    its table; a source is never waited for); the second one ends the process without
    waiting for it."""
    held, release = threading.Event(), threading.Event()

    def hold(entity: str, params: dict[str, str]) -> None:
        if entity == "task" and not held.is_set():
            held.set()
            release.wait(WAIT * 2)

    demo.on_request = hold
    try:
        data, port = config_for(pg_dsn, demo, ["task"])
        syncd = procs.start(write_config(tmp_path, data), port)
        syncd.wait_ready()
        wait_for(held.is_set, WAIT, "the first task request")
        with connection(pg_dsn) as blocker, blocker.cursor() as cur:
            cur.execute("LOCK TABLE task_details IN ACCESS EXCLUSIVE MODE")
            release.set()  # the page arrives, and its write waits for the lock
            wait_for(
                lambda: query(
                    pg_dsn,
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'syncd' "
                    "AND wait_event_type = 'Lock'",
                ),
                WAIT,
                "syncd waiting for the table lock",
            )
            syncd.send(signal.SIGTERM)
            syncd.notify.wait_for(stopping, WAIT, "STOPPING=1")
            time.sleep(0.5)  # the page is still held: syncd is draining
            assert syncd.alive(), "exited before the page being written ended"
            syncd.send(signal.SIGTERM)
            second = time.monotonic()
            syncd.wait_exit(5)  # gone, whatever its status: it did not wait for the page
            assert time.monotonic() - second < 3
            blocker.rollback()
    finally:
        release.set()


# --- 7. POST /v1/sync/{entity} --------------------------------------------------------


def test_post_sync_runs_the_entity_now_with_the_right_key_only(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    key = f"ingest-{uuid.uuid4().hex}"
    key_file = tmp_path / "ingest-api-key"
    key_file.write_text(key + "\n")
    data, port = config_for(pg_dsn, demo, ["user", "entity"], every="1h")
    data["http"]["api_key_file"] = str(key_file)
    syncd = procs.start(write_config(tmp_path, data), port)
    syncd.wait_ready()
    wait_ok(pg_dsn, ["user", "entity"], EVER)  # the runs at start

    right = {"X-API-KEY": key}
    wrong = syncd.post("/v1/sync/user", headers={"X-API-KEY": key + "x"})
    assert wrong.status == 401, wrong
    assert "error" in wrong.json()
    assert syncd.post("/v1/sync/user").status == 401
    unknown = syncd.post("/v1/sync/nosuch", headers=right)
    assert unknown.status == 404, unknown
    assert "error" in unknown.json()
    assert len(runs(pg_dsn, "user")) == 1, "a refused request started a run"

    asked_at = db_now(pg_dsn)
    accepted = syncd.post("/v1/sync/user", headers=right)
    assert accepted.status == 202, accepted
    wait_ok(pg_dsn, ["user"], asked_at, timeout=5)
    assert len(runs(pg_dsn, "entity")) == 1, "only the entity asked for runs"


def test_push_ingest_through_the_daemon_on_both_paths_and_after_a_reload(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """/v1/ingest/{entity} and an entity's ingest_path land rows; a reload keeps them."""
    key = f"ingest-{uuid.uuid4().hex}"
    key_file = tmp_path / "ingest-api-key"
    key_file.write_text(key + "\n")
    data, port = config_for(pg_dsn, demo, ["user"], every="1h")
    data["http"]["api_key_file"] = str(key_file)
    data["entities"]["user"]["ingest_path"] = "/insertUserDetailsBulk"
    path = write_config(tmp_path, data)
    syncd = procs.start(path, port)
    syncd.wait_ready()
    right = {"X-API-KEY": key, "Content-Type": "application/json"}
    records = demo.records("user")[:3]
    for record in records:
        record["UserId"] += 1_000_000  # not in the source: only a push puts them there

    first = syncd.post("/v1/ingest/user", json.dumps(records[:2]).encode(), right)
    assert first.status == 200, first
    assert first.json()["written"] == 2
    assert (
        syncd.post("/insertUserDetailsBulk", json.dumps(records[2:]).encode(), right).status == 200
    )
    assert syncd.post("/v1/ingest/user", b"[", right).status == 400

    syncd.send(signal.SIGHUP)
    syncd.notify.wait_for(is_ready, WAIT, "READY=1 after the reload")
    again = syncd.post("/insertUserDetailsBulk", json.dumps(records).encode(), right)
    assert again.status == 200, again
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM user_details WHERE user_id > 1000000")
    assert count == 3
    kinds = [r["kind"] for r in runs(pg_dsn, "user")]
    assert kinds.count("ingest") == 3  # one row per accepted push, none for the 400


# --- 8. promtool ----------------------------------------------------------------------


def test_promtool_finds_the_metrics_exposition_clean(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is missing: run `make system-packages` (Debian package prometheus)"
    )
    entities = ["task", "inspection", "user", "entity"]
    data, port = config_for(pg_dsn, demo, entities)
    syncd = procs.start(write_config(tmp_path, data), port)
    syncd.wait_ready()
    wait_ok(pg_dsn, entities, EVER)  # histograms have data
    text = syncd.metrics_text()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked


# --- 9. start-up failures -------------------------------------------------------------


def test_an_invalid_config_exits_2_at_once_saying_why(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    data, port = config_for(pg_dsn, demo, ["task"])
    data["entities"]["task"]["columns"]["title"]["type"] = "varchar(12)"
    syncd = procs.start(write_config(tmp_path, data), port)
    assert syncd.wait_exit(10) == 2
    assert "entities.task.columns.title.type" in syncd.stderr_text(), syncd.stderr_text()
    syncd.notify.collect(0.1)
    assert not any(is_ready(m) for m in syncd.notify.messages), syncd.notify.messages


def test_an_unreachable_database_is_waited_for_and_sigterm_still_exits_0(
    tmp_path: Path, demo: DemoSource, procs: Daemons
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/syncd?connect_timeout=2"
    data, port = config_for(nowhere, demo, ["task"])
    syncd = procs.start(write_config(tmp_path, data), port)
    waiting = syncd.notify.wait_for(
        lambda m: "waiting for the database" in m.get("STATUS", ""),
        WAIT,
        "STATUS= saying syncd waits for the database",
    )
    assert not is_ready(waiting)
    syncd.notify.collect(0.5)
    assert syncd.alive()
    assert not any(is_ready(m) for m in syncd.notify.messages), syncd.notify.messages
    syncd.send(signal.SIGTERM)
    assert syncd.wait_exit(5) == 0
    syncd.notify.collect(0.1)
    assert any(stopping(m) for m in syncd.notify.messages), syncd.notify.messages
    assert not any(is_ready(m) for m in syncd.notify.messages), syncd.notify.messages


# --- 10. logs -------------------------------------------------------------------------


def test_logs_are_json_lines_with_entity_and_run_id_and_no_secret(
    tmp_path: Path, pg_dsn: str, make_demo: MakeDemo, procs: Daemons
) -> None:
    source_key = f"source-{uuid.uuid4().hex}"
    ingest_key = f"ingest-{uuid.uuid4().hex}"
    demo = make_demo(api_key=source_key)
    (tmp_path / "source-api-key").write_text(source_key)
    (tmp_path / "ingest-api-key").write_text(ingest_key)
    entities = ["task", "inspection", "user", "entity"]
    data, port = config_for(pg_dsn, demo, entities)
    data["source"]["api_key_file"] = "source-api-key"  # next to the config file
    data["http"]["api_key_file"] = "ingest-api-key"
    syncd = procs.start(write_config(tmp_path, data), port)
    syncd.wait_ready()
    wait_ok(pg_dsn, entities, EVER)
    assert demo.request_count(status=401) == 0, "syncd did not send the source key"
    asked_at = db_now(pg_dsn)
    assert syncd.post("/v1/sync/task", headers={"X-API-KEY": ingest_key}).status == 202
    assert syncd.post("/v1/sync/task", headers={"X-API-KEY": source_key}).status == 401
    wait_ok(pg_dsn, ["task"], asked_at)
    answers = syncd.get("/status").text + syncd.metrics_text()
    syncd.send(signal.SIGTERM)
    assert syncd.wait_exit(WAIT) == 0

    events = []
    for line in syncd.stderr_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
    assert all(isinstance(e, dict) and e.get("event") and e.get("level") for e in events)
    for line in syncd.stdout_text().splitlines():
        json.loads(line)
    sync_events = [e for e in events if str(e["event"]).startswith("sync.")]
    lacking = [e for e in sync_events if "entity" not in e or "run_id" not in e]
    assert lacking == [], f"sync events without entity or run_id: {lacking}"
    for entity in entities:
        names = {e["event"] for e in sync_events if e.get("entity") == entity}
        assert {"sync.started", "sync.finished"} <= names, (entity, names)

    everything = "\n".join(
        [
            syncd.stdout_text(),
            syncd.stderr_text(),
            json.dumps(syncd.notify.messages),
            answers,
        ]
    )
    for name, secret in (("source", source_key), ("ingest", ingest_key)):
        assert secret not in everything, f"the {name} API key shows in syncd's output"
