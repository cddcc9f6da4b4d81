"""Push ingest through real HTTP, into a real PostgreSQL."""

from __future__ import annotations

import ast
import functools
import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from prometheus_client import CollectorRegistry

from devtools.demo_config import demo_config
from devtools.demo_source import DemoSource
from syncd.config.loader import load_config
from syncd.config.model import Config
from syncd.db.schema import migrate
from syncd.http.server import PostHandler, ServerHandle, serve
from syncd.ingest.ingestor import Ingestor
from syncd.metrics import Metrics
from syncd.service.ingest_routes import ingest_routes
from syncd.sync.incremental import RunResult
from tests.support import connection, execute, query, sync_once, wait_for, write_config

KEY = "ingest-test-key"
WAIT = 10.0  # the longest any request or wait in these tests may take
NO_SOURCE = "http://127.0.0.1:9"  # never called: these tests push, they do not sync
COUNTS = {"task": 120, "inspection": 5, "user": 5, "entity": 5}

T = TypeVar("T")


@dataclass
class IngestApp:
    """The daemon's side of the HTTP port, reduced to ingest: the daemon's own routes."""

    ingestor: Ingestor

    def alive(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        return True, "ready"

    def status(self) -> list[dict[str, Any]]:
        return []

    def trigger(self, entity: str) -> bool:
        return False

    def post_routes(self) -> Mapping[str, PostHandler]:
        return ingest_routes(self.ingestor, self.ingestor.config)


@dataclass
class Pushd:
    """A running ingest endpoint and what it writes to."""

    config: Config
    registry: CollectorRegistry
    ingestor: Ingestor
    server: ServerHandle

    @property
    def dsn(self) -> str:
        return self.config.database.dsn

    def post(self, path: str, body: Any, key: str | None = KEY) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-API-KEY"] = key
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=WAIT)
        try:
            conn.request("POST", path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"entity": "task", **labels}) or 0.0


Start = Callable[..., Pushd]


@pytest.fixture
def start(tmp_path: Path, pg_dsn: str) -> Iterator[Start]:
    running: list[Pushd] = []

    def _start(
        *,
        source_url: str = NO_SOURCE,
        api_key: bool = True,
        max_connections: int = 4,
        max_body: str = "64KiB",
    ) -> Pushd:
        since = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
        data = demo_config(pg_dsn, source_url, entities=["task"], initial_from=since)
        data["http"] = {"listen": "127.0.0.1:0", "max_body": max_body}
        if api_key:
            (tmp_path / "ingest-api-key").write_text(KEY + "\n")
            data["http"]["api_key_file"] = "ingest-api-key"
        data["entities"]["task"]["ingest_path"] = "/insertTaskDetailsBulk"
        config = load_config(write_config(tmp_path, data), environ={})
        with connection(pg_dsn) as conn:
            migrate(conn, config)
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        metrics.declare(config.entities)
        ingestor = Ingestor(config, metrics, max_connections=max_connections)
        pushd = Pushd(config, registry, ingestor, serve(config.http, registry, IngestApp(ingestor)))
        running.append(pushd)
        return pushd

    yield _start
    for pushd in running:
        pushd.server.shutdown()
        pushd.ingestor.close()


def task_records(seed: int = 1) -> list[dict[str, Any]]:
    """Realistic task records from the demo source's generator (never started)."""
    return DemoSource(seed=seed, counts=COUNTS).records("task")


def stored(dsn: str) -> dict[int, tuple[str, datetime]]:
    """task_id -> (title, modified_on)"""
    rows = query(dsn, "SELECT task_id, title, modified_on FROM task_details")
    return {key: (title, modified) for key, title, modified in rows}


def runs(dsn: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT id, kind, status, window_from, window_to, rows_fetched, rows_written, "
        "rows_rejected, error FROM sync_time ORDER BY id",
    )


def ingest_waits_on_a_lock(dsn: str) -> bool:
    waiting = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'syncd-ingest' AND wait_event_type = 'Lock' "
        "AND datname = current_database()",
    )
    return bool(waiting[0][0])


def in_thread(target: Callable[[], T]) -> Callable[[], T]:
    """Run `target` in a thread now; the returned function joins it and gives its result."""
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(target()), daemon=True)
    thread.start()

    def join() -> T:
        thread.join(WAIT)
        assert box, "the thread did not finish in time"
        return box[0]

    return join


def test_the_ingest_package_imports_no_transport() -> None:
    # The domain must not depend on HTTP: syncd.service.ingest_routes serves it.
    package = Path(__file__).parent.parent / "syncd" / "ingest"
    imported = set()
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert imported, "no imports found: wrong directory?"
    assert not {name for name in imported if name.startswith(("syncd.http", "syncd.service"))}


def test_a_push_stores_its_records_on_the_ingest_route_and_the_ingest_path(start: Start) -> None:
    pushd = start()
    records = task_records()[:30]

    status, first = pushd.post("/v1/ingest/task", records[:20])
    assert status == 200
    assert first == {"written": 20, "rejected": 0, "run_id": first["run_id"]}
    status, second = pushd.post("/insertTaskDetailsBulk", records[20:])
    assert (status, second["written"], second["rejected"]) == (200, 10, 0)

    rows = stored(pushd.dsn)
    assert {key: title for key, (title, _) in rows.items()} == {
        r["TaskId"]: r["Title"] for r in records
    }
    assert [run[1:] for run in runs(pushd.dsn)] == [
        ("ingest", "ok", None, None, 20, 20, 0, None),
        ("ingest", "ok", None, None, 10, 10, 0, None),
    ]
    assert [run[0] for run in runs(pushd.dsn)] == [first["run_id"], second["run_id"]]


def test_the_servers_checks_guard_the_push_routes_and_nothing_is_written(start: Start) -> None:
    # One request of each kind the server refuses before ingest sees it; the refusals
    # themselves (every variant, exact bodies) are tested in test_http_server.py.
    pushd = start()
    status, body = pushd.post("/v1/ingest/task", task_records()[:3], key="wrong-key")
    assert (status, body) == (401, {"error": "missing or wrong X-API-KEY"})
    big = json.dumps(task_records()).encode()
    assert len(big) > 64 * 1024
    assert pushd.post("/insertTaskDetailsBulk", big) == (413, {"error": "body over 65536 bytes"})
    keyless = start(api_key=False)
    assert keyless.post("/insertTaskDetailsBulk", task_records()[:3])[0] == 403
    assert stored(pushd.dsn) == {}
    assert runs(pushd.dsn) == []


def test_a_body_that_is_not_a_json_array_is_400_naming_the_problem(start: Start) -> None:
    pushd = start()
    cases = {
        b'[{"TaskId": 1,': "malformed JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 15 (char 14)",
        b'{"TaskId": 1}': "expected a JSON array of records, got an object",
        b"42": "expected a JSON array of records, got a number",
        b"null": "expected a JSON array of records, got null",
        b'[{"TaskId": NaN}]': "malformed JSON: NaN is not valid JSON",
        b'[{"Title": "\xff"}]': "body is not UTF-8: invalid byte at position 12",
        b"": "malformed JSON: Expecting value at line 1 column 1 (char 0)",
    }
    for body, error in cases.items():
        assert pushd.post("/v1/ingest/task", body) == (400, {"error": error}), body
    assert stored(pushd.dsn) == {}
    assert runs(pushd.dsn) == []


def test_an_empty_array_is_200_with_zero_counts_and_no_run(start: Start) -> None:
    pushd = start()
    assert pushd.post("/v1/ingest/task", b"[]") == (200, {"written": 0, "rejected": 0})
    assert runs(pushd.dsn) == []


def test_an_unknown_entity_is_404(start: Start) -> None:
    pushd = start()
    assert pushd.post("/v1/ingest/nope", task_records()[:1]) == (
        404,
        {"error": "unknown entity 'nope'"},
    )


def test_bad_records_go_to_sync_rejects_with_reasons_and_the_rest_is_stored(
    start: Start,
) -> None:
    pushd = start()
    records: list[Any] = task_records()[:10]
    records[1]["Priority"] = "high"
    records[2]["ModifiedOn"] = "yesterday"
    records[3]["EstimateHours"] = "1e200000"  # a valid number PostgreSQL cannot hold
    del records[4]["TaskId"]
    records[5]["Title"] = "nul\x00inside"  # text cannot hold NUL; the reject keeps the record
    records.append(42)

    status, body = pushd.post("/v1/ingest/task", records)

    assert (status, body["written"], body["rejected"]) == (200, 5, 6)
    good = [r["TaskId"] for i, r in enumerate(records[:10]) if i not in (1, 2, 3, 4, 5)]
    assert sorted(stored(pushd.dsn)) == sorted(good)
    rejects = query(pushd.dsn, "SELECT run_id, reason, record FROM sync_rejects ORDER BY id")
    assert {run_id for run_id, _, _ in rejects} == {body["run_id"]}
    reasons = [reason for _, reason, _ in rejects]
    assert reasons[:5] == [
        "field Priority: expected an integer, got 'high'",
        "field ModifiedOn: expected an ISO 8601 timestamp, got 'yesterday'",
        "primary key field TaskId is missing or null",
        "field Title: text contains a NUL character",
        "the record is 42, not an object",
    ]
    assert reasons[5].startswith("PostgreSQL refused the row: value overflows numeric format")
    assert rejects[0][2] == records[1]  # the record as received
    assert rejects[3][2]["Title"] == "nul\\u0000inside"  # jsonb cannot hold NUL: written out
    assert [run[5:8] for run in runs(pushd.dsn)] == [(11, 5, 6)]


def test_the_same_push_twice_is_accepted_twice_and_written_once(start: Start) -> None:
    pushd = start()
    records = task_records()[:15]
    xmin = "SELECT task_id, xmin::text FROM task_details ORDER BY task_id"

    assert pushd.post("/v1/ingest/task", records)[1]["written"] == 15
    before = query(pushd.dsn, xmin)
    assert pushd.post("/v1/ingest/task", records)[1]["written"] == 15
    assert query(pushd.dsn, xmin) == before
    assert [run[5:8] for run in runs(pushd.dsn)] == [(15, 15, 0), (15, 0, 0)]
    assert pushd.metric("syncd_records_written_total") == 15


def test_metrics_count_ingest_runs_changed_rows_and_rejects(start: Start) -> None:
    pushd = start()
    records: list[Any] = task_records()[:8]
    records.append({"TaskId": "not a number"})
    pushd.post("/v1/ingest/task", records)

    runs_ok = {"kind": "ingest", "status": "ok"}
    assert pushd.metric("syncd_sync_runs_total", **runs_ok) == 1
    assert pushd.metric("syncd_sync_duration_seconds_count", kind="ingest") == 1
    assert pushd.metric("syncd_records_written_total") == 8
    assert pushd.metric("syncd_records_rejected_total") == 1
    assert pushd.metric("syncd_records_fetched_total") == 0  # records from the source only

    execute(pushd.dsn, "DROP TABLE task_details")
    assert pushd.post("/v1/ingest/task", records[:1])[0] == 500
    assert pushd.metric("syncd_sync_runs_total", kind="ingest", status="failed") == 1
    assert pushd.metric("syncd_sync_runs_total", **runs_ok) == 1


def test_a_database_error_is_500_with_one_line_and_the_run_marked_failed(start: Start) -> None:
    pushd = start()
    execute(pushd.dsn, "DROP TABLE task_details")

    status, body = pushd.post("/v1/ingest/task", task_records()[:3])

    assert status == 500
    assert body["error"].startswith('database error: relation "public.task_details" does not')
    assert "\n" not in body["error"]
    assert "INSERT" not in body["error"]
    [run] = runs(pushd.dsn)
    assert (run[0], run[2], run[8]) == (body["run_id"], "failed", body["error"])
    assert query(pushd.dsn, "SELECT count(*) FROM sync_rejects") == [(0,)]


def test_all_connections_busy_is_503_and_that_push_writes_nothing(start: Start) -> None:
    pushd = start(max_connections=1)
    records = task_records()[:2]
    pushd.post("/v1/ingest/task", records)
    update = [{**r, "Title": "pushed"} for r in records]
    with connection(pushd.dsn) as blocker, blocker.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM task_details WHERE task_id = %s FOR UPDATE", (records[0]["TaskId"],)
        )
        first = in_thread(lambda: pushd.post("/v1/ingest/task", update))
        wait_for(
            lambda: ingest_waits_on_a_lock(pushd.dsn), WAIT, "the first push to hold the connection"
        )

        assert pushd.post("/v1/ingest/task", update) == (503, {"error": "busy, retry"})
        blocker.rollback()
        assert first()[0] == 200

    assert len(runs(pushd.dsn)) == 2  # the refused push left no run behind
    assert {title for title, _ in stored(pushd.dsn).values()} == {"pushed"}


def test_a_deadlock_is_retried_and_the_push_lands(start: Start) -> None:
    pushd = start()
    records = task_records()[:2]
    low, high = sorted(r["TaskId"] for r in records)
    pushd.post("/v1/ingest/task", records)
    update = [{**r, "Title": "pushed"} for r in records]
    lock = "SELECT 1 FROM task_details WHERE task_id = %s FOR UPDATE"
    with (
        structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs,
        connection(pushd.dsn) as other,
        other.cursor() as cur,
    ):
        cur.execute("SET statement_timeout = '10s'")
        cur.execute(lock, (high,))
        push = in_thread(lambda: pushd.post("/v1/ingest/task", update))
        wait_for(lambda: ingest_waits_on_a_lock(pushd.dsn), WAIT, "the push to lock the low key")
        cur.execute(lock, (low,))  # a cycle: PostgreSQL aborts the push after deadlock_timeout
        other.commit()
        status, body = push()

    assert (status, body["written"]) == (200, 2)
    assert {title for title, _ in stored(pushd.dsn).values()} == {"pushed"}
    assert [run[2] for run in runs(pushd.dsn)] == ["ok", "ok"]
    [retry] = [entry for entry in logs if entry["event"] == "ingest.retry"]
    assert (retry["entity"], retry["run_id"]) == ("task", body["run_id"])
    assert "deadlock detected (SQLSTATE 40P01)" in retry["reason"]


def test_a_lost_connection_is_retried_on_a_new_one(start: Start) -> None:
    pushd = start()
    records = task_records()[:4]
    assert pushd.post("/v1/ingest/task", records[:2])[0] == 200  # leaves an idle connection
    execute(
        pushd.dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'syncd-ingest' AND datname = current_database()",
    )
    with structlog.testing.capture_logs() as logs:
        assert pushd.post("/v1/ingest/task", records[2:])[0] == 200
    assert [entry["event"] for entry in logs] == ["ingest.retry", "ingest.finished"]
    assert len(stored(pushd.dsn)) == 4
    assert [run[2] for run in runs(pushd.dsn)] == ["ok", "ok"]


def test_logs_carry_entity_and_run_id_and_never_record_contents(start: Start) -> None:
    pushd = start()
    record = {**task_records()[0], "Title": "secret-title"}
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        status, body = pushd.post("/v1/ingest/task", [record, {"TaskId": None}])
    assert status == 200
    [finished] = [entry for entry in logs if entry["event"] == "ingest.finished"]
    assert (finished["entity"], finished["run_id"]) == ("task", body["run_id"])
    assert (finished["written"], finished["rejected"]) == (1, 1)
    assert "secret-title" not in repr(logs)
    assert str(record["TaskId"]) not in repr([entry for entry in logs if entry is not finished])


def test_concurrent_pushes_and_a_sync_of_the_same_keys_keep_the_newest_version(
    start: Start,
) -> None:
    base = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    writers = 13  # 4 pushing threads x 3 pushes, and the source
    source_writer = writers - 1

    def version(writer: int, index: int) -> datetime:
        # Versions of one key are all different, and each writer wins for some keys.
        # Keys 20 s apart: the source serves them in key order, the order pushes lock
        # them in (a sync that locks them in another order can deadlock with a push).
        return base + timedelta(seconds=20 * index + (writer + index) % writers)

    with DemoSource(seed=3, counts=COUNTS, start=base - timedelta(days=1), end=base) as demo:
        keys = sorted(r["TaskId"] for r in demo.records("task"))
        for index, key in enumerate(keys):
            demo.update("task", key, {"Title": "source"}, modified=version(source_writer, index))
        records = {r["TaskId"]: r for r in demo.records("task")}
        pushd = start(source_url=demo.base_url, max_body="16MiB")

        def pushes(thread: int) -> list[int]:
            barrier.wait(WAIT)
            statuses = []
            for push in range(3):
                writer = thread * 3 + push
                batch = [
                    {
                        **records[key],
                        "Title": f"w{writer}",
                        "ModifiedOn": version(writer, i).isoformat(),
                    }
                    for i, key in enumerate(keys)
                ]
                statuses.append(pushd.post("/v1/ingest/task", batch)[0])
            return statuses

        def sync() -> RunResult:
            barrier.wait(WAIT)
            return sync_once(pushd.config, "task")

        barrier = threading.Barrier(5)
        joins = [in_thread(functools.partial(pushes, thread)) for thread in range(4)]
        sync_done = in_thread(sync)
        assert [join() for join in joins] == [[200, 200, 200]] * 4
        synced = sync_done()
        assert (synced.outcome, synced.fetched) == ("ok", len(keys))

    expected = {}
    for index, key in enumerate(keys):
        winner = next(w for w in range(writers) if (w + index) % writers == writers - 1)
        title = "source" if winner == source_writer else f"w{winner}"
        expected[key] = (title, version(winner, index))
    assert stored(pushd.dsn) == expected
