"""Poison records, pulled and pushed through a real daemon: each is one reject with a
reason PostgreSQL can store, its clean neighbours land, and the entity goes on.

Once, a value that failed its type check while holding a NUL or a lone surrogate made
the reject itself unstorable: the whole page failed, every run again, the watermark
froze and the clean records beside it were never stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from devtools.demo_source import DemoSource
from devtools.devcluster import free_port
from tests.daemon_support import (
    WAIT,
    Daemons,
    daemon_config,
    ok_runs_since,
    wait_for,
)
from tests.hostile_source import first_page_only, hostile_source
from tests.support import query, watermark, write_config

MODIFIED = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
HUGE = "9" * 5000
DEEP = 100_000


def task(key: int, fields: str = "") -> str:
    extra = f", {fields}" if fields else ""
    return f'{{"TaskId": {key}, "ModifiedOn": "{MODIFIED}"{extra}}}'


# name: (the record as JSON text, what becomes of it: "reject", "stored" or "either")
POISON: dict[str, tuple[str, str]] = {
    "NUL in an integer": (task(101, '"Priority": "1\\u0000"'), "reject"),
    "lone surrogate in an integer": (task(102, '"Priority": "\\ud800"'), "reject"),
    "superscript digit as an integer": (task(103, '"Priority": "\\u00b2"'), "reject"),
    "NUL in text": (task(104, '"Title": "a\\u0000b"'), "reject"),
    "lone surrogate in text": (task(105, '"Title": "x\\udc00"'), "reject"),
    "NUL in jsonb": (task(106, '"Tags": {"k": "\\u0000"}'), "reject"),
    "lone surrogate in jsonb": (task(107, '"Tags": ["\\ud800"]'), "reject"),
    "NUL in a jsonb key": (task(108, '"Tags": {"a\\u0000": 1}'), "reject"),
    "1e999 in jsonb": (task(109, '"Tags": [1e999]'), "reject"),
    "jsonb 100,000 deep": (task(110, '"Tags": ' + "[" * DEEP + "]" * DEEP), "reject"),
    "jsonb 980 deep": (task(111, '"Tags": ' + "[" * 980 + "]" * 980), "either"),
    "an integer of 5000 digits": (task(112, f'"AssigneeId": {HUGE}'), "reject"),
    "a key of 5000 digits": (f'{{"TaskId": {HUGE}, "ModifiedOn": "{MODIFIED}"}}', "reject"),
    "NUL in a timestamp": (task(113, '"CreatedOn": "2026-01-01T00:00:00\\u0000"'), "reject"),
    "NUL in a uuid": (task(114, '"EntityId": "\\u0000"'), "reject"),
    "NaN for numeric": (task(115, '"EstimateHours": "NaN"'), "reject"),
    "a record that is a string": ('"\\u0000\\ud800"', "reject"),
    "100,000 deep in an unused field": (task(116, '"X": ' + "[" * DEEP + "]" * DEEP), "reject"),
    "1e999 for text": (task(117, '"Title": 1e999'), "stored"),
    "1.10 for text": (task(118, '"Title": 1.10'), "stored"),
    "1e999 for numeric": (task(119, '"EstimateHours": 1e999'), "stored"),
    "NUL in an unused field": (task(120, '"Unused": "\\u0000\\ud800"'), "stored"),
}
CLEAN = [task(1000 + i, f'"Title": "clean {i}"') for i in range(len(POISON) + 1)]


def page() -> bytes:
    """Every poison record with a clean record on each side."""
    records = [CLEAN[0]]
    for i, (text, _) in enumerate(POISON.values()):
        records += [text, CLEAN[i + 1]]
    return ("[" + ",\n".join(records) + "]").encode()


def expected(outcome: str) -> int:
    return sum(1 for _, fate in POISON.values() if fate == outcome)


def config(dsn: str, demo: DemoSource, url: str, tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    initial = datetime.now(UTC) - timedelta(days=1)
    data = daemon_config(dsn, demo, port, entities=["task"], initial_from=initial)
    data["entities"]["task"]["url"] = url
    (tmp_path / "ingest-api-key").write_text("k3y\n")
    data["http"]["api_key_file"] = str(tmp_path / "ingest-api-key")
    return write_config(tmp_path, data), port


def check_stored(dsn: str) -> None:
    keys = {key for (key,) in query(dsn, "SELECT task_id FROM task_details")}
    clean = {1000 + i for i in range(len(CLEAN))}
    assert clean <= keys, f"clean records missing: {sorted(clean - keys)}"
    titles = dict(query(dsn, "SELECT task_id, title FROM task_details WHERE task_id > 116"))
    assert titles[117] == "1e999" and titles[118] == "1.10", titles
    [(hours,)] = query(dsn, "SELECT estimate_hours::text FROM task_details WHERE task_id = 119")
    assert hours == "1" + "0" * 999
    for name, (text, fate) in POISON.items():
        if fate == "stored":
            key = json.loads(text.replace("\\u0000", "").replace("\\ud800", ""))["TaskId"]
            assert key in keys, name


def check_rejects(dsn: str, count: int) -> list[tuple[Any, ...]]:
    rows = query(dsn, "SELECT reason, record FROM sync_rejects ORDER BY id")
    assert len(rows) >= count
    for reason, record in rows:
        assert reason and "\x00" not in reason, reason
        assert record is not None
    return rows


def test_poison_pulled_from_a_source_is_rejected_and_the_page_lands(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    with hostile_source(first_page_only(page())) as source:
        path, port = config(pg_dsn, demo, source.url, tmp_path)
        syncd = procs.start(path, port)
        syncd.wait_ready()
        start = datetime.min.replace(tzinfo=UTC)
        wait_for(partial(ok_runs_since, pg_dsn, "task", start), WAIT, "an ok run")
        check_stored(pg_dsn)
        rejected = expected("reject")
        [(first_rejected,)] = query(
            pg_dsn, "SELECT rows_rejected FROM sync_time WHERE status = 'ok' ORDER BY id LIMIT 1"
        )
        assert rejected <= first_rejected <= rejected + expected("either")
        check_rejects(pg_dsn, rejected)
        # Not stalled: runs go on, and the watermark with them.
        mark = watermark(pg_dsn, "task")
        assert mark is not None
        wait_for(lambda: (watermark(pg_dsn, "task") or mark) > mark, WAIT, "the watermark moving")
        failed = query(pg_dsn, "SELECT error FROM sync_time WHERE status = 'failed'")
        assert failed == [], failed


def test_poison_pushed_is_rejected_and_the_push_lands(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    path, port = config(pg_dsn, demo, "http://127.0.0.1:9/unused", tmp_path)
    syncd = procs.start(path, port)
    syncd.wait_ready()
    reply = syncd.post("/v1/ingest/task", page(), {"X-API-KEY": "k3y"})
    assert reply.status == 200, reply
    body = reply.json()
    either = expected("either")
    assert expected("reject") <= body["rejected"] <= expected("reject") + either, body
    assert body["written"] + body["rejected"] == len(POISON) + len(CLEAN), body
    check_stored(pg_dsn)
    check_rejects(pg_dsn, expected("reject"))


def test_each_poison_alone_is_one_reject_in_a_push(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """Case by case, so a failure names the record."""
    path, port = config(pg_dsn, demo, "http://127.0.0.1:9/unused", tmp_path)
    syncd = procs.start(path, port)
    syncd.wait_ready()
    for name, (text, fate) in POISON.items():
        body = f"[{CLEAN[0]}, {text}]".encode()
        reply = syncd.post("/v1/ingest/task", body, {"X-API-KEY": "k3y"})
        assert reply.status == 200, (name, reply)
        rejected = reply.json()["rejected"]
        if fate != "either":
            assert rejected == (1 if fate == "reject" else 0), (name, reply.json())
