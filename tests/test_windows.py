"""Window planning: pure functions over an injected `now`."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from syncd.config.model import Window
from syncd.sync.spans import Span
from syncd.sync.windows import SourceTime, plan_pieces

UTC_SECONDS = SourceTime("%Y-%m-%d %H:%M:%S", ZoneInfo("UTC"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_window_reaches_back_by_lookback_and_stops_lag_before_now() -> None:
    window = Window(lookback=timedelta(minutes=2), lag=timedelta(seconds=30))
    pieces = plan_pieces(
        at("2026-01-01 10:00:00"), at("2026-01-01 10:05:00.9"), window, UTC_SECONDS
    )
    assert pieces == [Span(at("2026-01-01 09:58:00"), at("2026-01-01 10:04:30"))]


def test_edges_are_truncated_to_the_format_like_the_source_sees_them() -> None:
    minutes = SourceTime("%Y-%m-%d %H:%M", ZoneInfo("UTC"))
    pieces = plan_pieces(at("2026-01-01 10:00:00"), at("2026-01-01 10:07:59"), Window(), minutes)
    assert pieces[-1].end == at("2026-01-01 10:07:00")
    assert minutes.format(pieces[-1].end) == "2026-01-01 10:07"


def test_long_windows_are_split_by_max_and_pieces_touch() -> None:
    window = Window(lookback=timedelta(0), max=timedelta(days=1))
    pieces = plan_pieces(at("2026-01-01 06:00:00"), at("2026-01-04 00:00:00"), window, UTC_SECONDS)
    assert [p.end for p in pieces] == [
        at("2026-01-02 06:00:00"),
        at("2026-01-03 06:00:00"),
        at("2026-01-04 00:00:00"),
    ]
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))


def test_a_clock_behind_the_watermark_reads_nothing_and_never_moves_it_back() -> None:
    pieces = plan_pieces(
        at("2026-01-01 10:00:00"), at("2026-01-01 09:00:00"), Window(), UTC_SECONDS
    )
    assert pieces == []


def test_no_new_time_still_rereads_the_lookback() -> None:
    window = Window(lookback=timedelta(minutes=1))
    pieces = plan_pieces(
        at("2026-01-01 10:00:00"), at("2026-01-01 10:00:00.5"), window, UTC_SECONDS
    )
    assert pieces == [Span(at("2026-01-01 09:59:00"), at("2026-01-01 10:00:00"))]


def test_times_are_formatted_in_the_source_zone() -> None:
    kolkata = SourceTime("%Y-%m-%d %H:%M:%S", ZoneInfo("Asia/Kolkata"))
    assert kolkata.format(at("2026-01-01 00:00:00")) == "2026-01-01 05:30:00"
    assert kolkata.parse("2026-01-01 05:30:00") == at("2026-01-01 00:00:00")
