"""Preload end to end: calendar chunks of `[preload.from, E)` from the demo source over
real HTTP into a real PostgreSQL, with real `syncd preload` processes where one is
killed (docs/operations.md, "Preload (history backfill)"; docs/configuration.md).

A process is killed *mid-paging* through `Gate`, a demo `on_request` hook that holds
one chosen page request until released: the process is then waiting for that page
(its previous page possibly still being written), never between a chunk's last
commit and its `sync_time` update -- that instant has a test of its own."""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from devtools.demo_config import demo_config
from devtools.demo_source import DemoSource
from syncd.config.loader import load_config
from syncd.config.model import Config
from syncd.db.schema import migrate
from syncd.metrics import Metrics
from syncd.sync.locking import LockedSession
from syncd.sync.preload import Preloader
from syncd.sync.results import RunResult
from syncd.sync.spans import Span
from tests.daemon_support import child_env, syncd_sessions, wait_for
from tests.support import connection, query, versions_in_db, versions_in_source, write_config

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
NO_OTHERS = {"inspection": 0, "user": 0, "entity": 0}
RUN_TIMEOUT = 60  # seconds: the longest one `syncd` process of these tests may take

# --- helpers ------------------------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def local_month_starts(first: date, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Local midnights of every 1st of a month after `first`, before `end` (in UTC)."""
    edges: list[datetime] = []
    day = next_month(first)
    while (moment := datetime(day.year, day.month, 1, tzinfo=tz).astimezone(UTC)) < end:
        edges.append(moment)
        day = next_month(day)
    return edges


def preload_yaml(
    tmp_path: Path,
    dsn: str,
    demo: DemoSource,
    *,
    preload_from: str,
    chunk: str = "1mo",
    page_size: int = 1000,
    timezone: str = "UTC",
) -> Path:
    """The demo configuration for `task` alone, its preload enabled (no initial_from),
    written, and its tables created."""
    data = demo_config(dsn, demo.base_url, entities=["task"])
    task = data["entities"]["task"]
    del task["window"]["initial_from"]
    task["preload"] = {"from": preload_from, "chunk": chunk}
    data["source"]["page_size"] = page_size
    data["source"]["timezone"] = timezone
    path = write_config(tmp_path, data)
    with connection(dsn) as conn:
        migrate(conn, load_config(path))
    return path


def preload_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", "-c", str(config), "preload", "task", *args]


def sync_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "syncd", "-c", str(config), "sync", "task"]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env()
    )


@dataclass
class State:
    watermark: datetime | None
    end: datetime | None  # E
    done_to: datetime | None


def state(dsn: str) -> State:
    rows = query(
        dsn,
        "SELECT watermark, preload_end, preload_done_to FROM sync_state WHERE entity = 'task'",
    )
    return State(*rows[0]) if rows else State(None, None, None)


@dataclass
class Row:
    id: int
    window_from: datetime
    window_to: datetime
    status: str
    error: str | None
    rows_fetched: int


def runs(dsn: str, kind: str = "preload", status: str | None = None) -> list[Row]:
    rows = query(
        dsn,
        "SELECT id, window_from, window_to, status, error, rows_fetched FROM sync_time "
        "WHERE entity = 'task' AND kind = %s AND (%s::text IS NULL OR status = %s) ORDER BY id",
        (kind, status, status),
    )
    return [Row(*row) for row in rows]


def assert_tiles(windows: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> None:
    """The windows are distinct and cover `[start, end)` with no gap and no overlap."""
    assert len(set(windows)) == len(windows), f"a window recorded twice: {windows}"
    ordered = sorted(windows)
    assert ordered, "no window at all"
    assert ordered[0][0] == start, (ordered[0], start)
    assert ordered[-1][1] == end, (ordered[-1], end)
    for (_, to), (following, _) in itertools.pairwise(ordered):
        assert to == following, f"gap or overlap between {to} and {following}"


def missing_before(dsn: str, demo: DemoSource, moment: datetime | None) -> dict[Any, Any]:
    """Source records modified before `moment` that the table lacks or holds stale."""
    if moment is None:
        return {}
    stored = versions_in_db(dsn, "task")
    return {
        key: (modified, stored.get(key))
        for key, modified in versions_in_source(demo, "task").items()
        if modified < moment and stored.get(key) != modified
    }


def utc_param(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


Trip = Callable[[int, dict[str, str]], bool]


class Gate:
    """A demo `on_request` hook that holds the first request `trip` picks (told how many
    requests it has seen since `arm`, and the request's parameters) until `release`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trip: Trip | None = None
        self._seen = 0
        self.reached = threading.Event()
        self._release = threading.Event()

    def arm(self, trip: Trip) -> None:
        with self._lock:
            self._trip, self._seen = trip, 0
        self.reached.clear()
        self._release.clear()

    def release(self) -> None:
        with self._lock:
            self._trip = None
        self._release.set()

    def __call__(self, entity: str, params: dict[str, str]) -> None:
        with self._lock:
            self._seen += 1
            hit = self._trip is not None and self._trip(self._seen, params)
            if hit:
                self._trip = None
        if hit:
            self.reached.set()
            self._release.wait(timeout=RUN_TIMEOUT)


def nth_request(n: int) -> Trip:
    return lambda seen, params: seen == n


def kill_at_gate(
    command: list[str], gate: Gate, trip: Trip, extra: float, log: Path, dsn: str
) -> bool:
    """Start `command`, SIGKILL it `extra` seconds after it has sent the request `trip`
    picks (held, unanswered). True if it was killed there, not finished on its own."""
    gate.arm(trip)
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=child_env())
        try:
            wait_for(
                lambda: gate.reached.is_set() or proc.poll() is not None,
                timeout=30,
                what="the chosen request from syncd",
                every=0.005,
            )
            time.sleep(extra)  # a previous page may be being written or committed
            killed = proc.poll() is None and gate.reached.is_set()
        finally:
            proc.send_signal(signal.SIGKILL)  # a no-op once it has exited and been reaped
            proc.wait(timeout=10)
            gate.release()
    # Until its backend is gone the dead process's lock (and a sent commit) may linger.
    wait_for(lambda: syncd_sessions(dsn) == 0, timeout=10, what="syncd backends to exit")
    return killed


def preloader(config: Config, stop: threading.Event | None = None) -> tuple[Preloader, Metrics]:
    """An in-process Preloader with a fresh registry, after migrating."""
    with connection(config.database.dsn) as conn:
        migrate(conn, config)
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    return Preloader(config, metrics, stop=stop), metrics


def progress_ratio(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("syncd_preload_progress_ratio", {"entity": "task"})


@pytest.fixture
def gate() -> Gate:
    return Gate()


# --- 1. killed again and again, resumed each time -----------------------------------------

TASKS = 18_000
KILLS = 5
SEED = 20261201


def test_two_years_preloaded_through_repeated_sigkills_lose_nothing_and_meet_incremental(
    tmp_path: Path, pg_dsn: str, gate: Gate
) -> None:
    """Two years in monthly chunks, SIGKILLed mid-paging five times and resumed: every
    record stored, each chunk `ok` exactly once and the chunks tile [from, E), the killed
    chunks closed as interrupted, and incremental sync starts at E (no gap)."""
    now = datetime.now(UTC)
    rng = random.Random(SEED)
    data_from = now - timedelta(days=730)
    demo = DemoSource(
        counts={"task": TASKS, **NO_OTHERS},
        start=data_from,
        end=now - timedelta(hours=1),
        seed=SEED,
        on_request=gate,
    ).start()
    try:
        start = month_start(data_from)
        config = preload_yaml(
            tmp_path, pg_dsn, demo, preload_from=start.strftime(TIME_FORMAT), page_size=100
        )
        command = preload_command(config)

        end: datetime | None = None
        resumed_after_progress = 0
        for round_ in range(KILLS):
            before = state(pg_dsn)
            seen = len(demo.requests("task"))
            wanted = rng.randint(3, 40)
            killed = kill_at_gate(
                command,
                gate,
                nth_request(wanted),
                rng.uniform(0.0, 0.03),
                tmp_path / f"kill-{round_}.log",
                pg_dsn,
            )
            assert killed, f"round {round_}: the preload finished before request {wanted}"

            after = state(pg_dsn)
            assert after.end is not None
            if end is None:
                end = after.end
                # Records on both sides of E: the preload owns [.., E), incremental [E, ..).
                demo.insert("task", modified=end - timedelta(microseconds=1))
                demo.insert("task", modified=end)
                demo.insert("task", modified=end + timedelta(milliseconds=500))
            assert after.end == end, f"E moved at kill {round_}"
            if before.done_to is not None:
                resumed_after_progress += 1
                assert after.done_to is not None and after.done_to >= before.done_to
                # The resumed run read nothing before the committed progress.
                froms = [utc_param(r.params["fromTime"]) for r in demo.requests("task")[seen:]]
                assert min(froms) == before.done_to, f"re-read before done_to at kill {round_}"
            assert missing_before(pg_dsn, demo, after.done_to) == {}, f"after kill {round_}"
            running = runs(pg_dsn, status="running")
            assert len(running) == 1, f"the killed chunk's row, at kill {round_}: {running}"
        assert end is not None
        assert resumed_after_progress >= 2, "too few kills came after a committed chunk"

        done = run(command)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1].startswith("task: preload ok: "), done.stdout

        # Every record before E exactly once, as the source has it (E on: incremental's).
        source = versions_in_source(demo, "task")
        assert versions_in_db(pg_dsn, "task") == {k: v for k, v in source.items() if v < end}
        final = state(pg_dsn)
        assert final.end == end
        assert final.done_to == final.end

        # Each chunk once `ok`; together they tile [preload.from, E) at month starts.
        ok = runs(pg_dsn, status="ok")
        windows = [(r.window_from, r.window_to) for r in ok]
        assert_tiles(windows, start, end)
        edges = [start, *local_month_starts(start.date(), end, ZoneInfo("UTC")), end]
        assert sorted(windows) == list(itertools.pairwise(edges))
        # Each chunk was read whole by one run: its count is exactly the source's.
        for row in ok:
            in_source = demo.records("task", row.window_from, row.window_to)
            assert row.rows_fetched == len(in_source), (row.window_from, row.window_to)

        # The killed runs: closed as failed, interrupted, by the next preload.
        failed = runs(pg_dsn, status="failed")
        assert len(failed) == KILLS, failed
        assert all((r.error or "").startswith("interrupted") for r in failed), failed
        assert {(r.window_from, r.window_to) for r in failed} <= set(windows)
        assert runs(pg_dsn, status="running") == []

        # Incremental sync takes over at E: its first window reaches back from E.
        synced = run(sync_command(config))
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert synced.stdout.startswith("task: ok: "), synced.stdout
        mark = state(pg_dsn).watermark
        assert mark is not None and mark >= end
        [first] = runs(pg_dsn, kind="incremental")
        assert first.status == "ok"
        assert first.window_from == end - timedelta(minutes=1)  # E - lookback
        assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    finally:
        demo.on_request = None
        gate.release()
        demo.stop()


# --- 2. chunk edges in the source's time zone ---------------------------------------------


@pytest.mark.parametrize(
    ("zone", "spring", "fall"),
    [
        # (the time zone, the day its clocks go forward in 2024, the day they go back)
        ("Europe/Berlin", date(2024, 3, 31), date(2024, 10, 27)),
        ("America/New_York", date(2024, 3, 10), date(2024, 11, 3)),
    ],
)
def test_chunks_are_local_month_starts_across_dst_changes(
    tmp_path: Path, pg_dsn: str, zone: str, spring: date, fall: date
) -> None:
    """In a non-UTC source zone every chunk edge is a local midnight of a 1st, also
    across the DST changes (months of 31 days minus or plus an hour), the source is sent
    those local midnights, and each chunk holds exactly the source's records."""
    tz = ZoneInfo(zone)
    long_month = fall.replace(day=1)  # the month with the repeated hour
    after_long = next_month(long_month)
    demo = DemoSource(
        counts={"task": 2000, **NO_OTHERS},
        start=datetime(2024, 1, 1, tzinfo=tz),
        end=datetime(2025, 1, 1, tzinfo=tz),
        seed=7,
        timezone=zone,
    ).start()
    try:
        edge_records = [
            datetime(2024, 3, 31, 23, 59, 59, 999999, tzinfo=tz),  # the last µs of March
            datetime(2024, 4, 1, tzinfo=tz),  # April's first instant
            wall(spring, 0),  # the spring DST day
            wall(spring, 1, 59, 59),  # the last second before the gap
            wall(spring, 3),  # the first instant after it
            wall(fall, 0),  # the fall DST day
            wall(after_long, 0) - timedelta(microseconds=1),
            wall(after_long, 0),
        ]
        edge_records = [moment.replace(tzinfo=tz) for moment in edge_records]
        for moment in edge_records:
            demo.insert("task", modified=moment)
        config = load_config(
            preload_yaml(tmp_path, pg_dsn, demo, preload_from="2024-01-01 00:00:00", timezone=zone)
        )
        worker, _ = preloader(config)
        result = worker.preload_entity("task")
        assert result.outcome == "ok", result.error

        end = state(pg_dsn).end
        assert end is not None
        start = datetime(2024, 1, 1, tzinfo=tz).astimezone(UTC)
        ok = runs(pg_dsn, status="ok")
        windows = [(r.window_from, r.window_to) for r in ok]
        assert_tiles(windows, start, end)
        edges = [start, *local_month_starts(date(2024, 1, 1), end, tz), end]
        assert sorted(windows) == list(itertools.pairwise(edges))

        # PostgreSQL's own time zone rules agree: local midnights of the 1st.
        local = query(
            pg_dsn,
            "SELECT to_char(window_from AT TIME ZONE %s, 'YYYY-MM-DD HH24:MI:SS'), "
            "to_char(window_to AT TIME ZONE %s, 'YYYY-MM-DD HH24:MI:SS') FROM sync_time "
            "WHERE kind = 'preload' AND status = 'ok' ORDER BY window_from",
            (zone, zone),
        )
        texts = [text for pair in local for text in pair][:-1]  # the last end is E
        assert all(t.endswith("-01 00:00:00") for t in texts), texts
        by_start = {r.window_from.astimezone(tz).date(): r for r in ok}
        march, late = by_start[date(2024, 3, 1)], by_start[long_month]
        assert march.window_to - march.window_from == timedelta(days=31, hours=-1)
        late_days = (after_long - long_month).days
        assert late.window_to - late.window_from == timedelta(days=late_days, hours=1)

        # What the source was sent: those local midnights, formatted in its zone.
        sent_to = {r.params["toTime"] for r in demo.requests("task")}
        expected_to = {e.astimezone(tz).strftime(TIME_FORMAT) for e in edges[1:]}
        assert sent_to == expected_to
        assert {"2024-04-01 00:00:00", "2024-11-01 00:00:00"} <= sent_to
        assert "2024-01-01 00:00:00" in {r.params["fromTime"] for r in demo.requests("task")}

        # Each chunk holds exactly the source's records of its local month.
        for row in ok:
            in_source = demo.records("task", row.window_from, row.window_to)
            assert row.rows_fetched == len(in_source), row.window_from.astimezone(tz)
        for moment in edge_records:
            [holder] = [r for r in ok if r.window_from <= moment < r.window_to]
            local_start = holder.window_from.astimezone(tz)
            assert (local_start.year, local_start.month) == (moment.year, moment.month)
        stored, source = versions_in_db(pg_dsn, "task"), versions_in_source(demo, "task")
        assert stored.keys() == source.keys()
        # ModifiedOn is a local time without offset: in the repeated hour of the fall
        # change it cannot say which of the two it is, so compare the others only.
        assert {k: v for k, v in stored.items() if not ambiguous(source[k], tz)} == {
            k: v for k, v in source.items() if not ambiguous(v, tz)
        }
    finally:
        demo.stop()


def wall(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A naive wall time on `day` (the caller attaches the zone)."""
    return datetime(day.year, day.month, day.day, hour, minute, second)


def ambiguous(moment: datetime, tz: ZoneInfo) -> bool:
    naive = moment.astimezone(tz).replace(tzinfo=None)
    return (
        naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()
    )


# --- 3. resumed with another chunk size ---------------------------------------------------


def test_resume_with_a_smaller_chunk_starts_exactly_at_done_to(
    tmp_path: Path, pg_dsn: str, gate: Gate
) -> None:
    """Killed inside a monthly chunk, resumed with `1w`: the resumed run starts exactly at
    preload_done_to (no gap, nothing before it read again), cuts weeks from there, and
    everything ends up stored."""
    now = datetime.now(UTC)
    start = month_start(now - timedelta(days=240))
    demo = DemoSource(
        counts={"task": 6000, **NO_OTHERS},
        start=start,
        end=now - timedelta(hours=1),
        seed=3,
        on_request=gate,
    ).start()
    try:
        config = preload_yaml(
            tmp_path, pg_dsn, demo, preload_from=start.strftime(TIME_FORMAT), page_size=100
        )
        # Kill in the first chunk from the third on whose 1st is not a Monday, so the
        # first weekly chunk after it is a partial week.
        months = local_month_starts(start.date(), now, ZoneInfo("UTC"))
        resume_at = next(m for m in months[1:] if m.weekday() != 0)
        resume_text = resume_at.strftime(TIME_FORMAT)
        pages_of_chunk = [0]

        def second_page_of_the_chunk(seen: int, params: dict[str, str]) -> bool:
            pages_of_chunk[0] += params["fromTime"] == resume_text
            return pages_of_chunk[0] == 2

        killed = kill_at_gate(
            preload_command(config),
            gate,
            second_page_of_the_chunk,
            0.01,
            tmp_path / "kill.log",
            pg_dsn,
        )
        assert killed
        assert state(pg_dsn).done_to == resume_at

        preload_yaml(
            tmp_path,
            pg_dsn,
            demo,
            preload_from=start.strftime(TIME_FORMAT),
            chunk="1w",
            page_size=100,
        )
        seen = len(demo.requests("task"))
        done = run(preload_command(config))
        assert done.returncode == 0, done.stdout + done.stderr

        resumed = demo.requests("task")[seen:]
        assert resumed[0].params["fromTime"] == resume_text
        assert min(utc_param(r.params["fromTime"]) for r in resumed) == resume_at

        final = state(pg_dsn)
        assert final.end is not None and final.done_to == final.end
        ok = runs(pg_dsn, status="ok")
        assert_tiles([(r.window_from, r.window_to) for r in ok], start, final.end)
        monthly = [r for r in ok if r.window_to <= resume_at]
        weekly = sorted((r for r in ok if r.window_from >= resume_at), key=lambda r: r.window_from)
        assert len(monthly) + len(weekly) == len(ok)
        assert all(r.window_from.day == 1 for r in monthly)
        assert weekly[0].window_from == resume_at
        # resume_at is no Monday: the first weekly chunk is the rest of its week.
        assert weekly[0].window_to == resume_at + timedelta(days=7 - resume_at.weekday())
        # From there: Monday midnights, no chunk longer than a week.
        assert all(r.window_from.weekday() == 0 for r in weekly[1:])
        assert all(r.window_from.time() == datetime.min.time() for r in weekly)
        assert all(r.window_to - r.window_from <= timedelta(days=7) for r in weekly)
        [failed] = runs(pg_dsn, status="failed")
        assert failed.window_from == resume_at
        assert (failed.error or "").startswith("interrupted")

        assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    finally:
        demo.on_request = None
        gate.release()
        demo.stop()


# --- 4. a range by hand, and the command line's refusals -----------------------------------


@pytest.fixture
def small_demo() -> Iterator[DemoSource]:
    now = datetime.now(UTC)
    source = DemoSource(
        counts={"task": 1500, **NO_OTHERS},
        start=month_start(now - timedelta(days=150)),
        end=now - timedelta(hours=1),
        seed=11,
    ).start()
    try:
        yield source
    finally:
        source.stop()


def test_a_range_by_hand_rereads_it_and_moves_no_progress(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource
) -> None:
    """`--from/--to` reads exactly that range (changes made at the source inside it land)
    and never touches preload_done_to, before or after the configured preload."""
    demo = small_demo
    start = month_start(datetime.now(UTC) - timedelta(days=150))
    first = next_month(start.date())
    second = next_month(first)
    range_from = datetime(first.year, first.month, 1, tzinfo=UTC)
    range_to = datetime(second.year, second.month, 1, tzinfo=UTC)
    by_hand = ["--from", range_from.strftime(TIME_FORMAT), "--to", range_to.strftime(TIME_FORMAT)]
    config = preload_yaml(tmp_path, pg_dsn, demo, preload_from=start.strftime(TIME_FORMAT))

    # Before any configured preload: exactly the range, and no progress recorded.
    done = run(preload_command(config, *by_hand))
    assert done.returncode == 0, done.stdout + done.stderr
    in_range = {str(r["TaskId"]) for r in demo.records("task", range_from, range_to)}
    assert in_range and set(versions_in_db(pg_dsn, "task")) == in_range
    assert state(pg_dsn).done_to is None

    done = run(preload_command(config))
    assert done.returncode == 0, done.stdout + done.stderr
    before = state(pg_dsn)
    assert before.end is not None and before.done_to == before.end
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")

    # Changes at the source, keeping each record's instant: three inside, one outside.
    inside = [r["TaskId"] for r in demo.records("task", range_from, range_to)[:3]]
    outside = demo.records("task", range_to, before.end)[0]["TaskId"]
    for key in [*inside, outside]:
        demo.update("task", key, {"Title": "changed at the source"}, demo.modified_at("task", key))
    last_id = max(r.id for r in runs(pg_dsn))

    done = run(preload_command(config, *by_hand, "--chunk", "1w"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("task: preload ok: "), done.stdout
    titles = dict(query(pg_dsn, "SELECT task_id, title FROM task_details"))
    assert all(titles[key] == "changed at the source" for key in inside)
    assert titles[outside] != "changed at the source"
    assert state(pg_dsn) == before  # E, done_to and the watermark: untouched
    again = [r for r in runs(pg_dsn) if r.id > last_id]
    assert all(r.status == "ok" for r in again)
    assert_tiles([(r.window_from, r.window_to) for r in again], range_from, range_to)
    assert len(again) >= 4  # weekly chunks, as --chunk said


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "2026-01-01 00:00:00"], "--to needs --from"),
        (["--chunk", "1m"], "'1m' is ambiguous; write 1mo for months"),
        (["--from", "2026-13-01"], "not a valid date"),
        (["--from", "2026-03-01", "--to", "2026-02-01"], "is not before --to"),
    ],
)
def test_preload_usage_errors_exit_2_with_one_clear_line(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource, args: list[str], message: str
) -> None:
    """A wrong option is a usage error: exit 2, one readable line on stderr, no traceback."""
    config = preload_yaml(tmp_path, pg_dsn, small_demo, preload_from="2026-01-01 00:00:00")
    done = run(preload_command(config, *args))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_preload_of_an_unknown_entity_exits_2(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource
) -> None:
    config = preload_yaml(tmp_path, pg_dsn, small_demo, preload_from="2026-01-01 00:00:00")
    command = [sys.executable, "-m", "syncd", "-c", str(config), "preload", "nosuch"]
    done = run(command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown entity 'nosuch'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- 5. preload and incremental side by side -----------------------------------------------


def test_incremental_sync_runs_while_a_preload_of_the_same_entity_does(
    tmp_path: Path, pg_dsn: str
) -> None:
    """With a slow preload running, `syncd sync task` finishes at once with `ok` (the
    locks are separate), and a second preload of the entity is skipped."""
    now = datetime.now(UTC)
    start = month_start(now - timedelta(days=90))
    history_before = (now - timedelta(days=1)).strftime(TIME_FORMAT)

    def slow_history(entity: str, params: dict[str, str]) -> None:
        if params.get("fromTime", "") < history_before:  # preload pages only
            time.sleep(0.2)

    demo = DemoSource(
        counts={"task": 3000, **NO_OTHERS},
        start=start,
        end=now - timedelta(hours=1),
        seed=5,
        on_request=slow_history,
    ).start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = preload_yaml(
            tmp_path, pg_dsn, demo, preload_from=start.strftime(TIME_FORMAT), page_size=100
        )
        with (tmp_path / "preload.log").open("w") as out:
            proc = subprocess.Popen(
                preload_command(config), stdout=out, stderr=out, env=child_env()
            )
        wait_for(
            lambda: runs(pg_dsn, status="running"), timeout=20, what="the preload's first chunk"
        )

        began = time.monotonic()
        synced = run(sync_command(config))
        took = time.monotonic() - began
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert synced.stdout.startswith("task: ok: "), synced.stdout
        assert took < 10, f"the sync waited for the preload: {took:.1f}s"

        second = run(preload_command(config))
        assert second.returncode == 0, second.stdout + second.stderr
        assert "preload skipped" in second.stdout, second.stdout

        assert proc.poll() is None, "the preload ended: the test proves nothing"
        [incremental] = runs(pg_dsn, kind="incremental")
        assert incremental.status == "ok"
        assert len(runs(pg_dsn, status="running")) == 1  # the preload's chunk
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        demo.on_request = None
        demo.stop()


# --- 6. the progress gauge ---------------------------------------------------------------


def test_progress_ratio_moves_from_0_to_1_across_a_stop_and_a_resume(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource
) -> None:
    """`syncd_preload_progress_ratio` is 0 from the start, k/n after chunk k of n, and
    continues from the committed chunks in a fresh process (registry) after a stop."""
    start = month_start(datetime.now(UTC) - timedelta(days=150))
    config = load_config(
        preload_yaml(tmp_path, pg_dsn, small_demo, preload_from=start.strftime(TIME_FORMAT))
    )

    stop = threading.Event()
    worker, metrics = preloader(config, stop)
    assert progress_ratio(metrics) == 0.0
    seen: list[float | None] = []

    def after_two(chunk: Span, run_: RunResult) -> None:
        seen.append(progress_ratio(metrics))
        if len(seen) == 2:
            stop.set()

    first = worker.preload_entity("task", on_chunk=after_two)
    assert first.outcome == "stopped", first.error
    total = first.chunks_total
    assert total >= 5
    assert seen == [1 / total, 2 / total]

    worker, metrics = preloader(config)
    assert progress_ratio(metrics) == 0.0
    seen = []
    pages: list[int] = []
    rest = worker.preload_entity(
        "task",
        on_chunk=lambda c, r: seen.append(progress_ratio(metrics)),
        on_page=pages.append,
    )
    assert rest.outcome == "ok", rest.error
    assert sum(pages) == rest.fetched > 0  # told of each page as it commits
    assert seen == [k / total for k in range(3, total + 1)]
    assert progress_ratio(metrics) == 1.0

    worker, metrics = preloader(config)
    done = worker.preload_entity("task")
    assert done.outcome == "ok" and done.chunks_done == 0
    assert progress_ratio(metrics) == 1.0


# --- 7. the instant between a chunk's commit and its sync_time update -----------------------


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, the connection just goes away."""


def test_a_crash_after_a_chunk_commits_still_leaves_that_chunk_recorded_ok(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource
) -> None:
    """A process dying after a chunk's last page (and its progress) committed, before its
    `sync_time` row was closed: the chunk is not read again, so its row must not stay
    `failed` -- every chunk of [from, E) is recorded `ok` exactly once."""
    start = month_start(datetime.now(UTC) - timedelta(days=150))
    config = load_config(
        preload_yaml(tmp_path, pg_dsn, small_demo, preload_from=start.strftime(TIME_FORMAT))
    )

    with connection(pg_dsn) as conn:
        migrate(conn, config)
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    dying = Preloader(config, metrics)
    finish = dying.parts.recorder.finish
    closed: list[int | None] = []

    def dies_closing_the_second_chunk(session: LockedSession, result: RunResult) -> None:
        closed.append(result.run_id)
        if len(closed) == 2:
            raise Crash
        finish(session, result)

    dying.parts.recorder.finish = dies_closing_the_second_chunk  # type: ignore[method-assign]
    with pytest.raises(Crash):
        dying.preload_entity("task")
    second_chunk_end = state(pg_dsn).done_to
    assert second_chunk_end is not None  # its data and progress did commit

    worker, _ = preloader(config)
    result = worker.preload_entity("task")
    assert result.outcome == "ok", result.error
    final = state(pg_dsn)
    assert final.end is not None and final.done_to == final.end
    assert versions_in_db(pg_dsn, "task") == versions_in_source(small_demo, "task")
    ok = runs(pg_dsn, status="ok")
    assert_tiles([(r.window_from, r.window_to) for r in ok], start, final.end)


def test_preload_without_from_of_an_entity_without_preload_exits_2(
    tmp_path: Path, pg_dsn: str, small_demo: DemoSource
) -> None:
    """No configured preload and no --from: nothing to do is a usage error (exit 2)."""
    data = demo_config(pg_dsn, small_demo.base_url, entities=["task"])
    data["entities"]["task"]["preload"] = {"enabled": False}
    config = write_config(tmp_path, data)
    done = run(preload_command(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "entities.task.preload is not enabled" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_moving_preload_from_earlier_reads_the_added_range(tmp_path: Path, pg_dsn: str) -> None:
    """Progress made from a later start does not count for months before it."""
    now = datetime.now(UTC)
    demo = DemoSource(
        counts={"task": 3000, **NO_OTHERS},
        start=datetime(2024, 1, 1, tzinfo=UTC),
        end=now - timedelta(hours=1),
        seed=11,
    ).start()
    try:
        later = preload_yaml(tmp_path, pg_dsn, demo, preload_from="2025-01-01 00:00:00")
        assert run(preload_command(later)).returncode == 0
        early_keys = {
            str(r["TaskId"]) for r in demo.records("task", modified_to=datetime(2025, 1, 1))
        }
        assert early_keys and not early_keys & set(versions_in_db(pg_dsn, "task"))

        earlier = preload_yaml(tmp_path, pg_dsn, demo, preload_from="2024-01-01 00:00:00")
        assert run(preload_command(earlier)).returncode == 0
        stored = versions_in_db(pg_dsn, "task")
        assert early_keys <= set(stored)
        assert state(pg_dsn).done_to == state(pg_dsn).end
    finally:
        demo.stop()
