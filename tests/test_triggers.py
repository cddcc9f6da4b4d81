"""Triggers: pure next-fire-time functions over injected times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from syncd.config.model import Schedule
from syncd.service.triggers import DailyTrigger, IntervalTrigger, trigger_for

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone, fold=fold)


def fire_times(trigger: DailyTrigger, start: datetime, end: datetime) -> list[datetime]:
    times: list[datetime] = []
    moment = trigger.next_after(start)
    while moment < end:
        times.append(moment)
        moment = trigger.next_after(moment)
    return times


def test_interval_next_fire_is_one_interval_after_the_planned_start() -> None:
    """An on-time start fires again exactly one interval later."""
    assert IntervalTrigger(timedelta(minutes=1)).next_after(120.0, 120.0) == 180.0


def test_interval_a_slightly_late_start_does_not_drift_the_schedule() -> None:
    """A loop that wakes late still plans from the planned start (no drift)."""
    assert IntervalTrigger(timedelta(minutes=1)).next_after(120.0, 120.7) == 180.0


def test_interval_a_start_an_interval_late_restarts_from_the_actual_start() -> None:
    """After an overrun the interval counts from the catch-up run's start (no burst)."""
    assert IntervalTrigger(timedelta(minutes=1)).next_after(60.0, 150.0) == 210.0


def test_interval_must_be_positive() -> None:
    """A zero interval is refused rather than firing in a tight loop."""
    with pytest.raises(ValueError, match="positive"):
        IntervalTrigger(timedelta(0))


def test_daily_next_is_strictly_after_and_previous_is_at_or_before() -> None:
    """A scheduled instant is its own previous, but not its own next."""
    trigger = DailyTrigger((time(12, 0),), BERLIN)
    noon = local(BERLIN, 2026, 6, 1, 12, 0)
    assert trigger.next_after(noon) == local(BERLIN, 2026, 6, 2, 12, 0)
    assert trigger.previous_at_or_before(noon) == noon
    assert trigger.previous_at_or_before(noon - timedelta(microseconds=1)) == noon - timedelta(
        days=1
    )


def test_daily_results_are_utc_and_independent_of_the_zone_of_the_input() -> None:
    """The same instant given in any zone yields the same UTC fire time."""
    trigger = DailyTrigger((time(19, 14),), KOLKATA)
    in_utc = utc(2026, 6, 1, 10, 0)
    assert trigger.next_after(in_utc) == trigger.next_after(in_utc.astimezone(NEW_YORK))
    assert trigger.next_after(in_utc) == utc(2026, 6, 1, 13, 44)
    assert trigger.next_after(in_utc).tzinfo is UTC


def test_daily_several_times_in_any_order_fire_in_time_order() -> None:
    """Times given unsorted still fire in order, each once a day."""
    trigger = DailyTrigger((time(19, 14), time(0, 0), time(12, 0)), KOLKATA)
    fired = fire_times(trigger, local(KOLKATA, 2026, 1, 1), local(KOLKATA, 2026, 1, 3))
    assert [f.astimezone(KOLKATA).strftime("%d %H:%M") for f in fired] == [
        "01 12:00",
        "01 19:14",
        "02 00:00",
        "02 12:00",
        "02 19:14",
    ]


def test_berlin_spring_forward_a_missing_time_fires_once_after_the_gap() -> None:
    """02:30 on the last Sunday of March (no such time) fires once, at 03:30 CEST."""
    trigger = DailyTrigger((time(2, 30),), BERLIN)
    fired = fire_times(trigger, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0))
    assert fired == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    assert fired[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"


def test_berlin_fall_back_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    """02:30 on the last Sunday of October (twice) fires once, at 02:30 CEST."""
    trigger = DailyTrigger((time(2, 30),), BERLIN)
    fired = fire_times(trigger, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0))
    assert fired == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    second_occurrence = local(BERLIN, 2026, 10, 25, 2, 30, fold=1)
    assert trigger.next_after(fired[1]) > second_occurrence
    assert trigger.previous_at_or_before(second_occurrence) == fired[1]


def test_new_york_spring_forward_a_missing_time_fires_once_after_the_gap() -> None:
    """02:30 on the second Sunday of March fires once, at 03:30 EDT."""
    trigger = DailyTrigger((time(2, 30),), NEW_YORK)
    fired = fire_times(trigger, utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 12, 0))
    assert fired == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert fired[0].astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:30 EDT"


def test_new_york_fall_back_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    """01:30 on the first Sunday of November (twice) fires once, at 01:30 EDT."""
    trigger = DailyTrigger((time(1, 30),), NEW_YORK)
    fired = fire_times(trigger, utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0))
    assert fired == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert fired[0].astimezone(NEW_YORK).strftime("%H:%M %Z") == "01:30 EDT"


def test_previous_inside_the_spring_gap_is_the_day_before() -> None:
    """Just before the shifted 02:30 (03:29 CEST) the latest instant is yesterday's."""
    trigger = DailyTrigger((time(2, 30),), BERLIN)
    just_before = local(BERLIN, 2026, 3, 29, 3, 29)
    assert trigger.previous_at_or_before(just_before) == utc(2026, 3, 28, 1, 30)
    assert trigger.previous_at_or_before(local(BERLIN, 2026, 3, 29, 3, 30)) == utc(
        2026, 3, 29, 1, 30
    )


def test_a_missing_time_shifted_onto_another_configured_time_fires_once() -> None:
    """02:30 and 03:30 on the spring-forward day are the same instant: one fire."""
    trigger = DailyTrigger((time(2, 30), time(3, 30)), BERLIN)
    fired = fire_times(trigger, utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 12, 0))
    assert fired == [utc(2026, 3, 29, 1, 30)]


def test_a_whole_year_across_both_changes_fires_once_a_day_in_order() -> None:
    """Over 2026 in Berlin and New York, 02:30 fires exactly once per day, increasing."""
    for zone in (BERLIN, NEW_YORK):
        trigger = DailyTrigger((time(2, 30),), zone)
        fired = fire_times(trigger, local(zone, 2026, 1, 1), local(zone, 2027, 1, 1))
        assert len(fired) == 365
        assert all(a < b for a, b in itertools.pairwise(fired))
        assert len({f.astimezone(zone).date() for f in fired}) == 365


def test_midnight_year_end_rolls_into_the_next_year() -> None:
    """23:59 and 00:00 around New Year's Eve in New York, both directions."""
    trigger = DailyTrigger((time(0, 0), time(23, 59)), NEW_YORK)
    eve = local(NEW_YORK, 2026, 12, 31, 23, 59, 30)
    assert trigger.next_after(eve) == local(NEW_YORK, 2027, 1, 1, 0, 0)
    assert trigger.previous_at_or_before(eve) == local(NEW_YORK, 2026, 12, 31, 23, 59)
    new_year = local(NEW_YORK, 2027, 1, 1, 0, 0, 30)
    assert trigger.previous_at_or_before(new_year) == local(NEW_YORK, 2027, 1, 1, 0, 0)


def test_month_end_and_a_utc_date_other_than_the_local_date() -> None:
    """The end of February, with the UTC date already in March, keeps the local day."""
    trigger = DailyTrigger((time(23, 30),), NEW_YORK)
    # 2026-03-01 02:00 UTC is still 2026-02-28 21:00 in New York.
    assert trigger.next_after(utc(2026, 3, 1, 2, 0)) == local(NEW_YORK, 2026, 2, 28, 23, 30)
    assert trigger.previous_at_or_before(utc(2026, 3, 1, 2, 0)) == local(
        NEW_YORK, 2026, 2, 27, 23, 30
    )


def test_an_empty_list_of_times_is_refused() -> None:
    """A daily trigger with no time of day is an error, not a trigger that never fires."""
    with pytest.raises(ValueError, match="at least one"):
        DailyTrigger((), BERLIN)


def test_trigger_for_picks_interval_for_every_and_daily_for_at() -> None:
    """`every` maps to the monotonic interval, `at` to the daily trigger in its zone."""
    assert trigger_for(Schedule(every=timedelta(minutes=5))) == IntervalTrigger(
        timedelta(minutes=5)
    )
    at = Schedule(at=(time(0, 0), time(12, 0)), timezone=KOLKATA)
    assert trigger_for(at) == DailyTrigger((time(0, 0), time(12, 0)), KOLKATA)
