"""The demo upstream source, over real HTTP: windows, paging, auth, faults, hook, mutations."""

from __future__ import annotations

import gzip
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import urllib3
from urllib3.exceptions import ReadTimeoutError

from devtools.demo_source import BAD_KINDS, DemoSource, main, parse_timestamp

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 2, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
EMPTY = {"task": 0, "inspection": 0, "user": 0, "entity": 0}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    with urllib3.PoolManager(retries=False, timeout=5.0) as pool:
        yield pool


@pytest.fixture
def source() -> Iterator[DemoSource]:
    with DemoSource(seed=7, start=START, end=END, clock=lambda: NOW) as demo:
        yield demo


def window(start: datetime, end: datetime, limit: int = 1000, offset: int = 0) -> dict[str, str]:
    return {
        "fromTime": start.strftime(TIME_FORMAT),
        "toTime": end.strftime(TIME_FORMAT),
        "limit": str(limit),
        "offset": str(offset),
    }


def get(
    http: urllib3.PoolManager,
    url: str,
    params: Mapping[str, str],
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> urllib3.BaseHTTPResponse:
    return http.request("GET", url, fields=dict(params), headers=headers, **kwargs)


def page_keys(response: urllib3.BaseHTTPResponse, key_field: str = "TaskId") -> list[Any]:
    assert response.status == 200, response.data
    return [record[key_field] for record in json.loads(response.data)]


def read_window(
    http: urllib3.PoolManager, url: str, start: datetime, end: datetime, limit: int
) -> tuple[list[int], int]:
    """Page through a window; returns the keys in order and the number of requests."""
    keys: list[int] = []
    requests = 0
    while True:
        page = page_keys(get(http, url, window(start, end, limit, offset=len(keys))))
        requests += 1
        keys += page
        if len(page) < limit:
            return keys, requests


def test_window_includes_from_time_and_excludes_to_time(http: urllib3.PoolManager) -> None:
    t0, t1 = datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 1, 10, 1, tzinfo=UTC)
    with DemoSource(counts=EMPTY, clock=lambda: NOW) as demo:
        before, at_from, last, at_to = (
            demo.insert("task", modified=moment)["TaskId"]
            for moment in (t0 - timedelta(microseconds=1), t0, t1 - timedelta(microseconds=1), t1)
        )
        assert page_keys(get(http, demo.url("task"), window(t0, t1))) == [at_from, last]
        demo.inclusive_to = True
        assert page_keys(get(http, demo.url("task"), window(t0, t1))) == [at_from, last, at_to]
        assert before not in page_keys(get(http, demo.url("task"), window(t0, t1)))


def test_paging_covers_the_window_once_in_time_then_key_order(
    http: urllib3.PoolManager, source: DemoSource
) -> None:
    start, end = START + timedelta(days=3), END - timedelta(days=3)
    keys, requests = read_window(http, source.url("task"), start, end, limit=37)
    expected = [record["TaskId"] for record in source.records("task", start, end)]
    assert keys == expected
    assert len(set(keys)) == len(keys) > 300
    assert keys == sorted(keys, key=lambda key: (source.modified_at("task", key), key))
    assert requests == math.ceil((len(keys) + 1) / 37)
    assert read_window(http, source.url("task"), start, end, limit=37)[0] == keys  # stable


def test_limit_is_capped_at_max_limit(http: urllib3.PoolManager) -> None:
    with DemoSource(start=START, end=END, max_limit=50) as demo:
        assert len(page_keys(get(http, demo.url("task"), window(START, END, limit=1000)))) == 50


def test_iso_8601_times_are_accepted(http: urllib3.PoolManager, source: DemoSource) -> None:
    iso = {"fromTime": "2024-01-05T00:00:00.000Z", "toTime": "2024-01-09T00:00:00+00:00"}
    plain = window(datetime(2024, 1, 5, tzinfo=UTC), datetime(2024, 1, 9, tzinfo=UTC))
    assert page_keys(get(http, source.url("task"), iso)) == page_keys(
        get(http, source.url("task"), plain)
    )


@pytest.mark.parametrize(
    "params",
    [
        {"toTime": "2024-01-02 00:00:00"},
        {"fromTime": "2024-01-01 00:00:00", "toTime": "yesterday"},
        {**window(START, END), "limit": "many"},
        {**window(START, END), "limit": "0"},
        {**window(START, END), "offset": "-1"},
    ],
)
def test_bad_parameters_answer_400_with_a_json_error(
    http: urllib3.PoolManager, source: DemoSource, params: dict[str, str]
) -> None:
    response = get(http, source.url("task"), params)
    assert response.status == 400
    assert "error" in json.loads(response.data)


def test_unknown_path_answers_404(http: urllib3.PoolManager, source: DemoSource) -> None:
    response = get(http, source.base_url + "/api/Nothing", window(START, END))
    assert response.status == 404
    assert source.requests()[-1] == ("", window(START, END), 404)


def test_short_alias_serves_the_same_page(http: urllib3.PoolManager, source: DemoSource) -> None:
    for entity in source.entities:
        key_field = source.key_field(entity)
        long = page_keys(get(http, source.url(entity), window(START, END)), key_field)
        short = page_keys(
            get(http, f"{source.base_url}/api/{entity}", window(START, END)), key_field
        )
        assert long == short and long


@pytest.mark.parametrize("path", ["data", "result.items"])
def test_records_path_wraps_the_array(http: urllib3.PoolManager, path: str) -> None:
    with DemoSource(start=START, end=END) as demo:
        plain = json.loads(get(http, demo.url("user"), window(START, END)).data)
        demo.records_path = path
        body: Any = json.loads(get(http, demo.url("user"), window(START, END)).data)
        for name in path.split("."):
            body = body[name]
        assert body == plain


def test_wrong_or_missing_api_key_answers_401(http: urllib3.PoolManager) -> None:
    with DemoSource(api_key="s3cret", start=START, end=END) as demo:
        for headers in ({}, {"X-API-KEY": "guess"}):
            response = get(http, demo.url("task"), window(START, END), headers)
            assert response.status == 401
            assert "error" in json.loads(response.data)
        assert (
            get(http, demo.url("task"), window(START, END), {"X-API-KEY": "s3cret"}).status == 200
        )


def test_fail_next_answers_status_and_headers_then_recovers(
    http: urllib3.PoolManager, source: DemoSource
) -> None:
    source.fail_next(2, 429, headers={"Retry-After": "3"})
    for _ in range(2):
        response = get(http, source.url("task"), window(START, END))
        assert (response.status, response.headers["Retry-After"]) == (429, "3")
    assert get(http, source.url("task"), window(START, END)).status == 200


def test_fail_next_can_target_one_entity(http: urllib3.PoolManager, source: DemoSource) -> None:
    source.fail_next(1, 503, entity="user", body="upstream down")
    assert get(http, source.url("task"), window(START, END)).status == 200
    response = get(http, source.url("user"), window(START, END))
    assert (response.status, response.data) == (503, b"upstream down")
    assert get(http, source.url("user"), window(START, END)).status == 200


def test_truncate_next_sends_a_200_with_half_a_json_body(
    http: urllib3.PoolManager, source: DemoSource
) -> None:
    full = get(http, source.url("task"), window(START, END)).data
    source.truncate_next(1)
    response = get(http, source.url("task"), window(START, END))
    assert response.status == 200
    assert response.data == full[: len(full) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.data)
    assert get(http, source.url("task"), window(START, END)).data == full


def test_delay_next_makes_a_client_time_out(http: urllib3.PoolManager, source: DemoSource) -> None:
    source.delay_next(1, 0.5)
    with pytest.raises(ReadTimeoutError):
        get(http, source.url("task"), window(START, END), timeout=urllib3.Timeout(read=0.1))
    assert get(http, source.url("task"), window(START, END)).status == 200


def test_gzip_is_used_when_accepted(http: urllib3.PoolManager, source: DemoSource) -> None:
    plain = get(http, source.url("task"), window(START, END))
    assert "Content-Encoding" not in plain.headers
    zipped = get(
        http,
        source.url("task"),
        window(START, END),
        {"Accept-Encoding": "gzip"},
        decode_content=False,
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == plain.data


def test_on_request_runs_before_the_answer_of_each_request(
    http: urllib3.PoolManager, source: DemoSource
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    first = source.records("task", START, END)[0]["TaskId"]

    def hook(entity: str, params: dict[str, str]) -> None:
        seen.append((entity, params))
        if len(seen) == 1:  # moves the first record out of the window, as a mid-paging edit
            source.update("task", first, {"Status": "Done"})

    source.on_request = hook
    keys = page_keys(get(http, source.url("task"), window(START, END, limit=5)))
    get(http, source.url("user"), window(START, END, limit=5))
    assert first not in keys
    assert seen == [("task", window(START, END, limit=5)), ("user", window(START, END, limit=5))]


def test_a_failing_hook_answers_500(http: urllib3.PoolManager, source: DemoSource) -> None:
    def hook(entity: str, params: dict[str, str]) -> None:
        raise RuntimeError("boom")

    source.on_request = hook
    assert get(http, source.url("task"), window(START, END)).status == 500


def test_insert_update_delete_and_snapshots(source: DemoSource) -> None:
    count = source.record_count("task")
    created = source.insert("task", {"Title": "Fix the gate"})
    key = created["TaskId"]
    assert source.record_count("task") == count + 1
    assert (created["Title"], source.modified_at("task", key)) == ("Fix the gate", NOW)
    assert parse_timestamp(created["ModifiedOn"]) == NOW

    late = source.insert("task", modified=START + timedelta(days=2))  # a late-visible record
    in_window = source.records(
        "task", START + timedelta(days=2), START + timedelta(days=2, hours=1)
    )
    assert late in in_window

    updated = source.update("task", key, {"Status": "Blocked"}, modified=NOW + timedelta(hours=1))
    assert updated["Status"] == "Blocked"
    assert parse_timestamp(updated["ModifiedOn"]) == NOW + timedelta(hours=1)
    assert source.records("task")[-1] == updated  # now the latest record
    with pytest.raises(ValueError):
        source.update("task", key, {"TaskId": key + 1})
    with pytest.raises(ValueError):
        source.insert("task", {"TaskId": key})

    snapshot = source.records("task")
    snapshot[-1]["Status"] = "tampered"
    assert source.get("task", key)["Status"] == "Blocked"

    source.delete("task", key)
    assert source.record_count("task") == count + 1
    with pytest.raises(KeyError):
        source.delete("task", key)


def test_update_without_changes_changes_something_realistic(source: DemoSource) -> None:
    key = source.records("task")[0]["TaskId"]
    before = source.get("task", key)
    after = source.update("task", key)
    assert after["ModifiedOn"] != before["ModifiedOn"]
    assert after["TaskId"] == key and set(after) == set(before)


def test_key_fields(source: DemoSource) -> None:
    assert [source.key_field(entity) for entity in source.entities] == [
        "TaskId",
        "InspectionId",
        "UserId",
        "EntityId",
    ]
    assert isinstance(source.records("entity")[0]["EntityId"], str)


def test_bad_records_are_served_in_their_window(
    http: urllib3.PoolManager, source: DemoSource
) -> None:
    moment = datetime(2024, 1, 15, 12, 0, 0, 500, tzinfo=UTC)
    bad = source.bad_records("task", len(BAD_KINDS), modified=moment)
    served = json.loads(
        get(http, source.url("task"), window(moment, moment + timedelta(seconds=1))).data
    )
    # Served in (time, key) order: integer keys first, then the others.
    assert sorted(map(json.dumps, served)) == sorted(map(json.dumps, bad))
    assert "TaskId" not in bad[0]
    assert bad[1]["TaskId"] is None
    assert isinstance(bad[2]["TaskId"], str)
    assert bad[3]["Priority"] == "high"
    with pytest.raises(ValueError):
        parse_timestamp(bad[4]["ModifiedOn"])
    assert all("ModifiedOn" in record for record in bad)


def test_request_log_counts_and_resets(http: urllib3.PoolManager, source: DemoSource) -> None:
    source.fail_next(1, 500, entity="task")
    get(http, source.url("task"), window(START, END))
    get(http, source.url("task"), window(START, END))
    get(http, source.url("user"), window(START, END))
    assert [(r.entity, r.status) for r in source.requests()] == [
        ("task", 500),
        ("task", 200),
        ("user", 200),
    ]
    assert source.request_count("task") == 2
    assert source.request_count("task", status=200) == 1
    source.reset_log()
    assert source.request_count() == 0


def test_timestamps_carry_the_true_instant_in_each_entitys_style(source: DemoSource) -> None:
    task, inspection, user, entity = (source.records(name)[0] for name in source.entities)
    assert len(task["ModifiedOn"]) == 26 and task["ModifiedOn"][10] == " "
    assert inspection["ModifiedOn"].endswith("+00:00")
    assert user["ModifiedOn"].endswith("Z")
    for name, record in zip(source.entities, (task, inspection, user, entity), strict=True):
        key = record[source.key_field(name)]
        assert parse_timestamp(record["ModifiedOn"]) == source.modified_at(name, key)


def test_times_without_offset_are_read_in_the_source_timezone(http: urllib3.PoolManager) -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    moment = datetime(2024, 1, 10, 12, 0, tzinfo=kolkata)
    with DemoSource(counts=EMPTY, timezone="Asia/Kolkata", clock=lambda: NOW) as demo:
        record = demo.insert("task", modified=moment)
        assert record["ModifiedOn"] == "2024-01-10 12:00:00.000000"
        local = window(moment.replace(tzinfo=None), moment.replace(tzinfo=None, minute=1))
        assert page_keys(get(http, demo.url("task"), local)) == [record["TaskId"]]


def test_the_seed_decides_the_data() -> None:
    same = [DemoSource(seed=3, start=START, end=END).records("task") for _ in range(2)]
    other = DemoSource(seed=4, start=START, end=END).records("task")
    assert same[0] == same[1] != other


def test_task_records_are_about_600_bytes(source: DemoSource) -> None:
    sizes = [
        len(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode())
        for r in source.records("task")
    ]
    assert all(450 <= size <= 800 for size in sizes), (min(sizes), max(sizes))
    assert 550 <= sum(sizes) / len(sizes) <= 700


def test_churn_inserts_and_updates_in_the_background() -> None:
    with DemoSource(start=START, end=END, churn_per_second=200) as demo:
        count = demo.record_count("task")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            newest = demo.records("task")[-1]
            if (
                demo.record_count("task") > count
                and demo.modified_at("task", newest["TaskId"]) > END
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail("churn changed nothing within 5 s")


def test_200k_tasks_generate_and_page_quickly(http: urllib3.PoolManager) -> None:
    began = time.perf_counter()
    demo = DemoSource(counts={"task": 200_000}, start=START, end=START + timedelta(days=730))
    generated = time.perf_counter()
    with demo:
        keys, requests = read_window(
            http, demo.url("task"), START, START + timedelta(days=730), limit=1000
        )
    paged = time.perf_counter()
    assert len(keys) == 200_000 and requests == 201
    print(f"200k tasks: generated in {generated - began:.2f}s, paged in {paged - generated:.2f}s")


def test_main_returns_2_without_the_api_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_TEST_NO_SUCH_KEY", raising=False)
    assert main(["--port", "0", "--api-key-env", "SYNCD_TEST_NO_SUCH_KEY"]) == 2


def test_cli_serves_until_sigterm_without_showing_the_key(http: urllib3.PoolManager) -> None:
    env = {**os.environ, "DEMO_SOURCE_KEY": "k3y-that-must-not-leak"}
    command = [sys.executable, "-m", "devtools.demo_source", "--port", "0", "--task", "20"]
    command += ["--api-key-env", "DEMO_SOURCE_KEY"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line_containing(process, "serving", timeout=10)
        url = next(word for word in line.split() if word.startswith("task="))[len("task=") :]
        headers = {"X-API-KEY": "k3y-that-must-not-leak"}
        today = datetime.now(UTC)
        response = get(http, url, window(today - timedelta(days=40), today), headers)
        assert len(page_keys(response)) == 20
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "k3y-that-must-not-leak" not in line + process.stderr.read()
    finally:
        process.kill()
        process.wait(timeout=10)


def read_line_containing(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stderr], [], [], left)
        line = process.stderr.readline() if ready else ""
        if text in line:
            return line
        if ready and not line:
            break  # the process ended
    pytest.fail(f"no line containing {text!r} within {timeout}s")
