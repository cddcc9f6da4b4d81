"""Sources that trickle, flood, ignore `offset` or nest without end: each fails its
request or run with a clear error, within `source.timeout`, in bounded memory, and a
stop never waits for them."""

from __future__ import annotations

import gzip
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_source import DemoSource
from devtools.devcluster import free_port
from syncd.config.model import Config
from tests.daemon_support import WAIT, Daemons, daemon_config, runs, wait_for
from tests.hostile_source import HostileSource, Reply, first_page_only, hostile_source
from tests.support import demo_setup, sync_once, watermark, write_config

MODIFIED = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def tasks(first: int, count: int) -> list[dict[str, Any]]:
    return [{"TaskId": i, "ModifiedOn": MODIFIED} for i in range(first, first + count)]


def setup(
    tmp_path: Path, dsn: str, demo: DemoSource, source: HostileSource, **settings: Any
) -> Config:
    def tweak(data: dict[str, Any]) -> None:
        data["entities"]["task"]["url"] = source.url
        data["entities"]["task"]["window"].update(max="3650d")  # one piece
        data["source"].update(retries={"attempts": 2, "backoff": "10ms"}, **settings)

    return demo_setup(tmp_path, dsn, demo, entities=["task"], tweak=tweak)


def test_a_trickling_source_times_out_at_source_timeout_for_the_whole_request(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the deadline is for the
    whole request, from connecting to the last byte."""
    slow = Reply(json.dumps(tasks(1, 50)).encode(), drip=0.2)
    with hostile_source(lambda query: slow) as source:
        config = setup(tmp_path, pg_dsn, demo, source, timeout="1s")
        began = time.monotonic()
        result = sync_once(config, "task")
        took = time.monotonic() - began
    assert result.outcome == "failed"
    assert result.error is not None and "no complete answer within 1s" in result.error
    assert len(source.requests) == 2  # both tries, each cut at its deadline
    assert took < 5, f"{took:.1f}s"
    assert watermark(pg_dsn, "task") is None


def test_a_page_far_larger_than_page_size_records_is_refused_as_it_arrives(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """100 MB sent for a page of 10 records: refused after the first MiB, not retried."""
    huge = b"[" + b" " * (100 * 1024 * 1024) + b"]"
    with hostile_source(lambda query: Reply(huge)) as source:
        config = setup(tmp_path, pg_dsn, demo, source, page_size=10)
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None
    assert "more than 1,048,576 bytes (source.max_page_bytes)" in result.error
    assert len(source.requests) == 1


def test_a_gzip_bomb_is_refused_by_its_decompressed_size(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]")  # ~200 KB on the wire
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with hostile_source(lambda query: Reply(bomb, headers=headers)) as source:
        config = setup(tmp_path, pg_dsn, demo, source, page_size=10, max_page_bytes="4MiB")
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None and "more than 4,194,304 bytes" in result.error


def test_a_source_that_ignores_offset_fails_the_run_instead_of_paging_for_ever(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The same full page for every offset: the run fails after a bounded number of
    requests, saying so, and nothing moves."""
    same = Reply(json.dumps(tasks(1, 10)).encode())
    with hostile_source(lambda query: same) as source:
        config = setup(tmp_path, pg_dsn, demo, source, page_size=10)
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None and "offset" in result.error, result.error
    assert len(source.requests) <= 40
    assert watermark(pg_dsn, "task") is None


def test_a_source_that_ignores_offset_with_one_record_repeated_fails_too(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """A page of one record ten times, at every offset: an anchor is found at once each
    time, so every page looked new (2.8 million records in 33 s, without end)."""
    same = Reply(json.dumps(tasks(1, 1) * 10).encode())
    with hostile_source(lambda query: same) as source:
        config = setup(tmp_path, pg_dsn, demo, source, page_size=10)
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None and "does the source honour the offset" in result.error
    assert len(source.requests) <= 40


def test_a_source_with_new_records_at_every_request_is_bounded_by_the_rereads(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Records that differ at every request (say, a "fetched at" field) never anchor:
    the pager reads back, bounded, then fails the window."""
    counter = iter(range(1, 10**9))

    def endless(query: dict[str, str]) -> Reply:
        return Reply(json.dumps(tasks(next(counter) * 100, 10)).encode())

    with hostile_source(endless) as source:
        config = setup(tmp_path, pg_dsn, demo, source, page_size=10)
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None and "kept shifting" in result.error
    assert len(source.requests) <= 100


def test_a_body_nested_100000_deep_is_an_invalid_body_retried_not_a_crash(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    deep = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    with hostile_source(lambda query: Reply(deep)) as source:
        config = setup(tmp_path, pg_dsn, demo, source)
        result = sync_once(config, "task")
    assert result.outcome == "failed"
    assert result.error is not None
    assert "not the expected JSON (cannot be decoded: nested deeper" in result.error
    assert "internal error" not in result.error
    assert len(source.requests) == 2  # retried like any invalid body


def test_a_page_whose_records_are_nested_100000_deep_is_one_reject_per_record(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """`[[[[...]]]]`: an array of one record that is itself too deep: a reject, and
    the window completes."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with hostile_source(first_page_only(deep)) as source:
        config = setup(tmp_path, pg_dsn, demo, source)
        result = sync_once(config, "task")
    assert (result.outcome, result.rejected) == ("ok", 1), result
    assert watermark(pg_dsn, "task") is not None


# --- a stop never waits for a source -----------------------------------------------------------


@pytest.mark.parametrize("how", ["trickle", "stall"])
def test_sigterm_ends_within_seconds_whatever_the_source_does(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons, how: str
) -> None:
    """A source dripping a byte every 0.5 s under `timeout: 60s` (it took 82 s and left
    the run `running`), or sending half a page and going silent: SIGTERM cuts the
    request; the run is recorded failed; exit 0 within seconds."""
    body = json.dumps(tasks(1, 50)).encode()
    reply = Reply(body, drip=0.5) if how == "trickle" else Reply(body, stall_after=100)
    with hostile_source(lambda query: reply) as source:
        port = free_port()
        initial = datetime.now(UTC) - timedelta(days=1)
        data = daemon_config(pg_dsn, demo, port, entities=["task"], initial_from=initial)
        data["entities"]["task"]["url"] = source.url
        data["source"]["timeout"] = "60s"
        syncd = procs.start(write_config(tmp_path, data), port)
        syncd.wait_ready()
        wait_for(lambda: source.requests, WAIT, "a request to the source")
        wait_for(lambda: [r for r in runs(pg_dsn) if r["status"] == "running"], WAIT, "a run")
        time.sleep(0.5)  # well into the answer
        began = time.monotonic()
        syncd.send(signal.SIGTERM)
        assert syncd.wait_exit(WAIT) == 0
        took = time.monotonic() - began
    assert took < 3, f"SIGTERM took {took:.1f}s"
    [run] = runs(pg_dsn)
    assert run["status"] == "failed", run
    assert "stopped before the window was complete" in (run["error"] or ""), run
