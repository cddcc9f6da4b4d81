"""Incremental sync end to end: the demo source over real HTTP into a real PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_source import DemoSource, parse_timestamp
from syncd.config.model import Config
from tests.support import (
    MakeDemo,
    demo_setup,
    execute,
    missing_below_watermark,
    query,
    sync_once,
    versions_in_db,
    versions_in_source,
    watermark,
)

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    return make_demo(
        counts={"task": 1200, "inspection": 300, "user": 50, "entity": 20},
        start=END - timedelta(days=30),
        end=END,
        clock=lambda: datetime.now(UTC),
    )


def assert_converges(config: Config, pg_dsn: str, demo: DemoSource) -> None:
    """Changes have stopped: one more pass whose toTime is past every change leaves
    the table equal to the source."""
    later = datetime.now(UTC) + timedelta(seconds=2)
    assert sync_once(config, "task", now=lambda: later).outcome == "ok"
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def small_pages(page_size: int, lookback: str = "1m", window_max: str = "1d") -> Any:
    def tweak(data: dict[str, Any]) -> None:
        data["source"]["page_size"] = page_size
        for entity in data["entities"].values():
            entity["window"]["lookback"] = lookback
            entity["window"]["max"] = window_max

    return tweak


def test_first_sync_copies_every_record_and_commits_the_sent_to_time(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, tweak=small_pages(100))
    moment = datetime(2026, 11, 28, 10, 30, 15, 987654, tzinfo=UTC)
    result = sync_once(config, "task", now=lambda: moment)

    assert result.outcome == "ok", result.error
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    # The watermark is the toTime the source was sent: formatted, so whole seconds.
    assert watermark(pg_dsn, "task") == moment.replace(microsecond=0)
    assert demo.requests("task")[-1].params["toTime"] == "2026-11-28 10:30:15"
    [(status, fetched, written, rejected, window_to)] = query(
        pg_dsn, "SELECT status, rows_fetched, rows_written, rows_rejected, window_to FROM sync_time"
    )
    assert (status, fetched, written, rejected) == ("ok", 1200, 1200, 0)
    assert window_to == moment.replace(microsecond=0)
    assert result.fetched == result.written == 1200


def test_every_column_type_is_stored_as_the_contract_says(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    assert sync_once(config, "task").outcome == "ok"
    record = demo.records("task")[0]
    [row] = query(
        pg_dsn,
        "SELECT title, priority, due_date::text, estimate_hours, is_billable, tags, "
        "site_name, created_on::text, modified_on FROM task_details WHERE task_id = %s",
        (record["TaskId"],),
    )
    title, priority, due, hours, billable, tags, site, created, modified = row
    assert (title, priority, due, billable, tags) == (
        record["Title"],
        record["Priority"],
        record["DueDate"],
        record["IsBillable"],
        record["Tags"],
    )
    assert float(hours) == record["EstimateHours"]
    location = record["Location"]
    assert site == (location["Site"]["Name"] if location else None)  # null object -> NULL
    # A `timestamp` column keeps the wall-clock value as written.
    assert created == record["CreatedOn"].rstrip("0").rstrip(".")
    assert modified == demo.modified_at("task", record["TaskId"])


def test_a_second_pass_over_unchanged_data_rewrites_no_row(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Pin the window so the second pass re-reads everything it read before."""
    config = demo_setup(tmp_path, pg_dsn, demo, tweak=small_pages(250))
    assert sync_once(config, "task").outcome == "ok"
    before = dict(query(pg_dsn, "SELECT task_id, xmin::text FROM task_details"))
    execute(pg_dsn, "UPDATE sync_state SET watermark = '2026-10-01' WHERE entity = 'task'")

    again = sync_once(config, "task")

    assert again.outcome == "ok"
    assert again.fetched == 1200
    assert again.written == 0
    # Not rewritten at all: every row is still the tuple the first pass wrote.
    assert dict(query(pg_dsn, "SELECT task_id, xmin::text FROM task_details")) == before


def test_churn_converges_to_exactly_the_source(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, tweak=small_pages(50, lookback="0s"))
    rng = random.Random(7)
    keys = [r["TaskId"] for r in demo.records("task")]

    def churn(entity: str, params: dict[str, str]) -> None:
        for _ in range(3):
            if rng.random() < 0.7:
                demo.update("task", rng.choice(keys))
            else:
                keys.append(demo.insert("task")["TaskId"])

    demo.on_request = churn
    for _ in range(4):
        assert sync_once(config, "task").outcome == "ok"
        assert missing_below_watermark(pg_dsn, demo, "task") == {}
    demo.on_request = None
    assert_converges(config, pg_dsn, demo)


def test_records_leaving_the_window_between_every_two_pages_are_not_lost(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """With lookback 0: an update before the current offset shifts every later record
    down; a naive offset pager skips one record per shift."""
    config = demo_setup(
        tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(20, "0s", "90d")
    )
    rng = random.Random(3)
    read_so_far: list[Any] = []

    def move_one_already_read(entity: str, params: dict[str, str]) -> None:
        offset = int(params["offset"])
        bounds = parse_timestamp(params["fromTime"]), parse_timestamp(params["toTime"])
        window = demo.records("task", *bounds)[:offset]
        if window:
            victim = rng.choice(window)["TaskId"]
            read_so_far.append(victim)
            demo.update("task", victim)  # new time is now: past toTime, out of the window

    demo.on_request = move_one_already_read
    result = sync_once(config, "task")
    demo.on_request = None

    assert result.outcome == "ok", result.error
    assert len(read_so_far) > 50  # the window really did shift, many times
    assert missing_below_watermark(pg_dsn, demo, "task") == {}
    assert_converges(config, pg_dsn, demo)


def test_duplicates_across_pages_are_written_and_counted_once(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """A record appearing before the offset shifts every later record up, so each
    page starts with records the last one already had."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(40, "0s"))
    first = demo.records("task")[0]
    early = demo.modified_at("task", first["TaskId"]) - timedelta(seconds=1)

    def appear_before_the_window(entity: str, params: dict[str, str]) -> None:
        demo.insert("task", modified=early)

    demo.on_request = appear_before_the_window
    result = sync_once(config, "task")
    demo.on_request = None

    assert result.outcome == "ok", result.error
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM task_details")
    assert result.written == count
    [(fetched, written)] = query(pg_dsn, "SELECT rows_fetched, rows_written FROM sync_time")
    assert written == count
    assert fetched == count


def test_late_visible_records_within_lookback_arrive_on_the_next_run(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(100, "2m"))
    assert sync_once(config, "task").outcome == "ok"
    mark = watermark(pg_dsn, "task")
    assert mark is not None
    late = demo.insert("task", modified=mark - timedelta(seconds=90))  # committed late
    too_late = demo.insert("task", modified=mark - timedelta(minutes=10))  # beyond lookback

    assert sync_once(config, "task").outcome == "ok"
    stored = versions_in_db(pg_dsn, "task")
    assert str(late["TaskId"]) in stored
    assert str(too_late["TaskId"]) not in stored  # lookback is the limit, as documented


def test_bad_records_are_rejected_and_their_page_still_lands(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(1000))
    bad = demo.bad_records("task", 5, modified=END - timedelta(days=1))
    result = sync_once(config, "task")

    assert result.outcome == "ok", result.error
    assert result.rejected == 5
    rejects = query(pg_dsn, "SELECT run_id, record, reason FROM sync_rejects ORDER BY id")
    assert len(rejects) == 5
    as_received = {json.dumps(r[1], sort_keys=True) for r in rejects}
    assert as_received == {json.dumps(b, sort_keys=True) for b in bad}
    reasons = " | ".join(r[2] for r in rejects)
    assert "primary key field TaskId is missing or null" in reasons
    assert "field TaskId: expected an integer" in reasons
    assert "field ModifiedOn: expected an ISO 8601 timestamp" in reasons
    assert {r[0] for r in rejects} == {result.run_id}
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM task_details")
    assert count == 1200


def test_the_version_guard_holds_on_the_sync_path(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The wiring check of the version guard (tested in full in test_store): through a
    real sync, an older version never replaces a newer row, and a tie still lands."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(100, "5m"))
    assert sync_once(config, "task").outcome == "ok"
    mark = watermark(pg_dsn, "task")
    assert mark is not None
    key = demo.records("task")[5]["TaskId"]
    newer = mark - timedelta(seconds=30)
    demo.update("task", key, {"Title": "newer"}, modified=newer)
    assert sync_once(config, "task").outcome == "ok"
    # The source now serves an older version of the same record inside the window.
    demo.update("task", key, {"Title": "older"}, modified=newer - timedelta(seconds=30))
    assert sync_once(config, "task").outcome == "ok"
    [(title,)] = query(pg_dsn, "SELECT title FROM task_details WHERE task_id = %s", (key,))
    assert title == "newer"
    # A correction without a new timestamp.
    demo.update("task", key, {"Title": "corrected"}, modified=newer)
    assert sync_once(config, "task").outcome == "ok"
    [(title,)] = query(pg_dsn, "SELECT title FROM task_details WHERE task_id = %s", (key,))
    assert title == "corrected"


def test_records_path_and_paging_parameter_names_are_configurable(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    demo.records_path = "result.items"

    def tweak(data: dict[str, Any]) -> None:
        data["source"]["records_path"] = "result.items"
        data["source"]["page_size"] = 300

    config = demo_setup(tmp_path, pg_dsn, demo, entities=["user"], tweak=tweak)
    assert sync_once(config, "user").outcome == "ok"
    assert versions_in_db(pg_dsn, "user") == versions_in_source(demo, "user")


def test_a_new_column_in_the_yaml_is_added_to_the_table(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["user"])
    assert sync_once(config, "user").outcome == "ok"

    def more(data: dict[str, Any]) -> None:
        data["entities"]["user"]["columns"]["created_on"] = {"field": "CreatedOn", "type": "text"}

    wider = demo_setup(tmp_path, pg_dsn, demo, entities=["user"], tweak=more)
    execute(pg_dsn, "UPDATE sync_state SET watermark = '2026-10-01'")
    assert sync_once(wider, "user").outcome == "ok"
    [(filled,)] = query(pg_dsn, "SELECT count(created_on) FROM user_details")
    assert filled == 50


def test_a_record_jsonb_cannot_hold_is_still_rejected_and_its_page_lands(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """NUL and Infinity pass json.loads but jsonb refuses them: the reject must land."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=small_pages(1000))
    when = END - timedelta(days=1)
    demo.insert("task", {"Title": "nul \u0000 inside"}, modified=when)
    demo.insert("task", {"EstimateHours": float("inf")}, modified=when)
    result = sync_once(config, "task")

    assert result.outcome == "ok", result.error
    assert result.rejected == 2
    reasons = [r[0] for r in query(pg_dsn, "SELECT reason FROM sync_rejects ORDER BY id")]
    assert reasons == [
        "field Title: text contains a NUL character",
        "field EstimateHours: expected a finite number, got inf",
    ]
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM task_details")
    assert count == 1200


def test_a_source_url_with_its_own_query_keeps_it_and_gets_the_window(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    def tweak(data: dict[str, Any]) -> None:
        data["entities"]["user"]["url"] += "?apiVersion=2"

    config = demo_setup(tmp_path, pg_dsn, demo, entities=["user"], tweak=tweak)
    assert sync_once(config, "user").outcome == "ok"
    params = demo.requests("user")[-1].params
    assert params["apiVersion"] == "2"
    assert "fromTime" in params and "toTime" in params
    assert versions_in_db(pg_dsn, "user") == versions_in_source(demo, "user")
