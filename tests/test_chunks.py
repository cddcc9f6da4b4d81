"""Preload chunks: calendar boundaries in the source zone, compared as UTC instants."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import pytest

from syncd.config.model import CalendarStep
from syncd.sync.chunks import chunks_done, plan_chunks
from syncd.sync.spans import Span
from syncd.sync.windows import SourceTime

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
DAY, WEEK, MONTH, YEAR = (
    CalendarStep(1, "d"),
    CalendarStep(1, "w"),
    CalendarStep(1, "mo"),
    CalendarStep(1, "y"),
)
UNITS: tuple[Literal["d", "w", "mo", "y"], ...] = ("d", "w", "mo", "y")


def local(text: str, tz: ZoneInfo = UTC_ZONE) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def edges(chunks: list[Span], tz: ZoneInfo = UTC_ZONE) -> list[str]:
    """Every chunk edge as local wall time with its offset, first start to last end."""
    points = [c.start for c in chunks] + [chunks[-1].end]
    return [p.astimezone(tz).isoformat(sep=" ") for p in points]


def lengths(chunks: list[Span]) -> list[timedelta]:
    return [c.end - c.start for c in chunks]


def test_monthly_chunks_cut_at_the_first_of_each_month_including_leap_february() -> None:
    chunks = plan_chunks(local("2024-01-01"), local("2024-04-01"), MONTH, UTC_ZONE)
    assert edges(chunks) == [
        "2024-01-01 00:00:00+00:00",
        "2024-02-01 00:00:00+00:00",
        "2024-03-01 00:00:00+00:00",
        "2024-04-01 00:00:00+00:00",
    ]
    assert lengths(chunks) == [timedelta(days=31), timedelta(days=29), timedelta(days=31)]


def test_a_start_and_end_mid_period_make_partial_first_and_last_chunks() -> None:
    chunks = plan_chunks(
        local("2024-01-31 18:30:00"), local("2024-03-15 12:00:00"), MONTH, UTC_ZONE
    )
    assert edges(chunks) == [
        "2024-01-31 18:30:00+00:00",
        "2024-02-01 00:00:00+00:00",
        "2024-03-01 00:00:00+00:00",
        "2024-03-15 12:00:00+00:00",
    ]


def test_a_range_inside_one_period_is_one_chunk() -> None:
    start, end = local("2024-05-03 10:00:00"), local("2024-05-20 10:00:00")
    assert plan_chunks(start, end, MONTH, UTC_ZONE) == [Span(start, end)]


def test_a_range_ending_on_a_boundary_has_no_empty_last_chunk() -> None:
    chunks = plan_chunks(local("2024-01-15"), local("2024-03-01"), MONTH, UTC_ZONE)
    assert len(chunks) == 2
    assert chunks[-1].end == local("2024-03-01")


def test_yearly_chunks_cut_at_january_first() -> None:
    chunks = plan_chunks(local("2022-06-01"), local("2025-02-01"), YEAR, UTC_ZONE)
    assert edges(chunks) == [
        "2022-06-01 00:00:00+00:00",
        "2023-01-01 00:00:00+00:00",
        "2024-01-01 00:00:00+00:00",
        "2025-01-01 00:00:00+00:00",
        "2025-02-01 00:00:00+00:00",
    ]


def test_weekly_chunks_cut_at_monday_midnight() -> None:
    # 2024-01-03 is a Wednesday; the following Mondays are Jan 8, 15, 22.
    chunks = plan_chunks(local("2024-01-03 09:00:00"), local("2024-01-24"), WEEK, UTC_ZONE)
    assert edges(chunks) == [
        "2024-01-03 09:00:00+00:00",
        "2024-01-08 00:00:00+00:00",
        "2024-01-15 00:00:00+00:00",
        "2024-01-22 00:00:00+00:00",
        "2024-01-24 00:00:00+00:00",
    ]
    assert all(c.start.weekday() == 0 for c in chunks[1:])


def test_daily_chunks_cut_at_midnight() -> None:
    chunks = plan_chunks(local("2024-02-28 12:00:00"), local("2024-03-02"), DAY, UTC_ZONE)
    assert edges(chunks) == [
        "2024-02-28 12:00:00+00:00",
        "2024-02-29 00:00:00+00:00",
        "2024-03-01 00:00:00+00:00",
        "2024-03-02 00:00:00+00:00",
    ]


def test_boundaries_are_midnights_of_the_source_zone_not_utc() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    chunks = plan_chunks(local("2024-08-15", kolkata), local("2024-10-15", kolkata), MONTH, kolkata)
    assert edges(chunks, kolkata)[1:3] == [
        "2024-09-01 00:00:00+05:30",
        "2024-10-01 00:00:00+05:30",
    ]
    assert chunks[1].start == local("2024-08-31 18:30:00")  # the same instant in UTC
    assert all(c.start.tzinfo is UTC and c.end.tzinfo is UTC for c in chunks)


@pytest.mark.parametrize(
    ("tz", "short_day", "long_day"),
    [(BERLIN, "2024-03-31", "2024-10-27"), (NEW_YORK, "2024-03-10", "2024-11-03")],
)
def test_daily_chunks_are_23_and_25_hours_long_across_dst_changes(
    tz: ZoneInfo, short_day: str, long_day: str
) -> None:
    for day, hours in ((short_day, 23), (long_day, 25)):
        start = local(day, tz)
        chunks = plan_chunks(start - timedelta(days=1), start + timedelta(days=2), DAY, tz)
        assert edges(chunks, tz)[1][11:19] == "00:00:00"
        assert lengths(chunks)[1:] == [timedelta(hours=hours), timedelta(hours=24)]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
def test_monthly_edges_stay_local_midnights_across_dst_changes(tz: ZoneInfo) -> None:
    chunks = plan_chunks(local("2024-01-01", tz), local("2025-01-01", tz), MONTH, tz)
    assert len(chunks) == 12
    assert all(e[8:19] == "01 00:00:00" for e in edges(chunks, tz))
    offsets = {e[19:] for e in edges(chunks, tz)}
    assert len(offsets) == 2  # winter and summer time


def test_a_local_midnight_lost_to_a_dst_gap_becomes_the_first_instant_after_it() -> None:
    # Santiago jumped from 2022-09-11 00:00 -04 to 01:00 -03.
    santiago = ZoneInfo("America/Santiago")
    chunks = plan_chunks(
        local("2022-09-10", santiago), local("2022-09-12", santiago), DAY, santiago
    )
    assert edges(chunks, santiago) == [
        "2022-09-10 00:00:00-04:00",
        "2022-09-11 01:00:00-03:00",
        "2022-09-12 00:00:00-03:00",
    ]
    assert lengths(chunks) == [timedelta(hours=24), timedelta(hours=23)]


def test_an_ambiguous_local_midnight_is_its_first_occurrence() -> None:
    # Havana went back from 2023-11-05 01:00 -04 to 00:00 -05: midnight happened twice.
    havana = ZoneInfo("America/Havana")
    chunks = plan_chunks(local("2023-11-04", havana), local("2023-11-06", havana), DAY, havana)
    assert edges(chunks, havana)[1] == "2023-11-05 00:00:00-04:00"
    assert lengths(chunks) == [timedelta(hours=24), timedelta(hours=25)]


def test_a_skipped_calendar_day_makes_no_empty_chunk() -> None:
    # Samoa skipped 2011-12-30 entirely: both midnights are the same instant.
    apia = ZoneInfo("Pacific/Apia")
    chunks = plan_chunks(local("2011-12-29", apia), local("2012-01-01", apia), DAY, apia)
    assert edges(chunks, apia) == [
        "2011-12-29 00:00:00-10:00",
        "2011-12-31 00:00:00+14:00",
        "2012-01-01 00:00:00+14:00",
    ]


def test_every_edge_reads_back_as_itself_once_formatted_for_the_source() -> None:
    zones = [ZoneInfo(z) for z in ("America/Santiago", "America/Havana", "Europe/Berlin")]
    formats = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M", "%Y-%m-%d")
    for tz, fmt in itertools.product(zones, formats):
        source_time = SourceTime(fmt, tz)
        chunks = plan_chunks(local("2021-01-01", tz), local("2025-01-01", tz), DAY, tz)
        for chunk in chunks:  # via UTC: a gap time read back never == another zone's (PEP 495)
            read_back = source_time.truncate(chunk.start).astimezone(UTC)
            assert read_back == chunk.start, (tz, fmt, chunk)


def test_n_unit_steps_count_from_the_boundary_at_or_before_start() -> None:
    three_months = CalendarStep(3, "mo")
    chunks = plan_chunks(local("2024-02-10"), local("2024-12-01"), three_months, UTC_ZONE)
    assert edges(chunks) == [
        "2024-02-10 00:00:00+00:00",
        "2024-05-01 00:00:00+00:00",
        "2024-08-01 00:00:00+00:00",
        "2024-11-01 00:00:00+00:00",
        "2024-12-01 00:00:00+00:00",
    ]


def test_n_week_and_n_day_steps_anchor_on_monday_and_on_midnight() -> None:
    # 2024-01-03 is a Wednesday, so two-week steps count from Monday 2024-01-01.
    chunks = plan_chunks(
        local("2024-01-03 09:00:00"), local("2024-02-01"), CalendarStep(2, "w"), UTC_ZONE
    )
    assert edges(chunks)[1:-1] == ["2024-01-15 00:00:00+00:00", "2024-01-29 00:00:00+00:00"]
    chunks = plan_chunks(
        local("2024-01-03 09:00:00"), local("2024-01-10"), CalendarStep(3, "d"), UTC_ZONE
    )
    assert edges(chunks)[1:-1] == ["2024-01-06 00:00:00+00:00", "2024-01-09 00:00:00+00:00"]


def test_n_year_steps_count_from_january_first_of_the_start_year() -> None:
    chunks = plan_chunks(local("2019-07-01"), local("2024-03-01"), CalendarStep(2, "y"), UTC_ZONE)
    assert edges(chunks)[1:-1] == ["2021-01-01 00:00:00+00:00", "2023-01-01 00:00:00+00:00"]


def test_an_empty_or_reversed_range_has_no_chunks() -> None:
    moment = local("2024-01-01")
    assert plan_chunks(moment, moment, MONTH, UTC_ZONE) == []
    assert plan_chunks(moment, moment - timedelta(days=40), MONTH, UTC_ZONE) == []


def test_a_step_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_chunks(local("2024-01-01"), local("2024-02-01"), CalendarStep(0, "d"), UTC_ZONE)


@pytest.mark.parametrize(("start", "expected"), [("2024-01-01", 24), ("2024-01-15", 25)])
def test_two_years_of_monthly_chunks(start: str, expected: int) -> None:
    first = local(start, BERLIN)
    chunks = plan_chunks(first, first.replace(year=first.year + 2), MONTH, BERLIN)
    assert len(chunks) == expected


def test_chunks_done_counts_the_chunks_ending_at_or_before_done_to() -> None:
    chunks = plan_chunks(local("2024-01-15"), local("2024-06-15"), MONTH, UTC_ZONE)
    assert len(chunks) == 6
    assert chunks_done(chunks, None) == 0
    assert chunks_done(chunks, local("2024-01-20")) == 0
    assert chunks_done(chunks, local("2024-02-01")) == 1
    assert chunks_done(chunks, local("2024-04-10")) == 3
    assert chunks_done(chunks, local("2024-06-15")) == 6
    assert chunks_done(chunks, local("2030-01-01")) == 6
    assert chunks_done([], local("2024-01-01")) == 0


def test_random_ranges_are_covered_without_gaps_overlaps_or_empty_chunks() -> None:
    rng = random.Random(20240101)
    zones = [UTC_ZONE, BERLIN, NEW_YORK, ZoneInfo("Asia/Kolkata")]
    base = datetime(2020, 1, 1, tzinfo=UTC)
    for _ in range(300):
        tz = rng.choice(zones)
        step = CalendarStep(rng.randint(1, 4), rng.choice(UNITS))
        start = base + timedelta(seconds=rng.randrange(4 * 365 * 86400))
        end = start + timedelta(seconds=rng.randrange(1, 3 * 365 * 86400))
        chunks = plan_chunks(start, end, step, tz)
        assert chunks[0].start == start and chunks[-1].end == end
        assert all(c.start < c.end for c in chunks)
        assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
        for c in chunks[1:]:
            assert c.start.astimezone(tz).time().isoformat() == "00:00:00", (step, tz, c)
