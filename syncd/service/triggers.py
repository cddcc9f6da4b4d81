"""Pure triggers: given a time, the next fire time. No clock, no sleeping.

`IntervalTrigger` works on the monotonic clock (float seconds), so wall-clock
jumps never move it. `DailyTrigger` works on the wall clock: its scheduled
instants are local times of day in the schedule's time zone, returned as aware
UTC datetimes (compare and subtract them freely; convert them for display).

Daylight saving time, for a local time of day `T`:

- `T` does not exist that day (spring forward, e.g. 02:30 in Europe/Berlin on
  the last Sunday of March): it fires once, at the first instant after the gap
  at the same offset into it, i.e. 02:30 fires at 03:30 local. This is the
  PEP 495 `fold=0` reading of `T` (the offset from before the change) taken
  through UTC.
- `T` exists twice that day (fall back, e.g. 02:30 in Europe/Berlin on the last
  Sunday of October): it fires once, at the first occurrence (`fold=0`).

Two local times that land on the same instant (02:30 shifted onto a configured
03:30) are one instant, and fire once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.config.model import Schedule


@dataclass(frozen=True)
class IntervalTrigger:
    """Every `every`, on the monotonic clock."""

    every: timedelta

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError(f"interval must be positive, got {self.every}")

    @property
    def seconds(self) -> float:
        return self.every.total_seconds()

    def next_after(self, planned: float, started: float) -> float:
        """The next fire time after a run planned for `planned` that began at `started`.

        One interval after the planned start, so a loop that wakes a little late
        never drifts the schedule; a run that began a whole interval or more after
        its plan (it followed an overrun, or waited that long for a slot) restarts
        the schedule one interval after its actual start, so missed fire times are
        never replayed as a burst."""
        anchor = planned if started - planned < self.seconds else started
        return anchor + self.seconds


@dataclass(frozen=True)
class DailyTrigger:
    """At local times of day `times` in `tz`, every day."""

    times: tuple[time, ...]
    tz: ZoneInfo

    def __post_init__(self) -> None:
        if not self.times:
            raise ValueError("a daily trigger needs at least one time of day")

    def next_after(self, wall: datetime) -> datetime:
        """The first scheduled instant strictly after `wall` (aware), in UTC."""
        moment = wall.astimezone(UTC)
        return min(i for i in self._instants_around(moment) if i > moment)

    def previous_at_or_before(self, wall: datetime) -> datetime | None:
        """The most recent scheduled instant at or before `wall` (aware), in UTC."""
        moment = wall.astimezone(UTC)
        return max((i for i in self._instants_around(moment) if i <= moment), default=None)

    def _instants_around(self, moment: datetime) -> list[datetime]:
        # Two days either side of the local date cover any UTC offset, and even a
        # skipped calendar day (Pacific/Apia, 2011-12-30).
        day = moment.astimezone(self.tz).date()
        return [self._instant(day + timedelta(days=d), t) for d in range(-2, 3) for t in self.times]

    def _instant(self, day: date, at: time) -> datetime:
        """`at` on `day` in the zone, read with fold=0 (see the module docstring), in UTC."""
        return datetime.combine(day, at.replace(tzinfo=None, fold=0), self.tz).astimezone(UTC)


Trigger = IntervalTrigger | DailyTrigger


def trigger_for(schedule: Schedule) -> Trigger:
    """The trigger of a schedule: `every` on the monotonic clock, `at` on the wall clock."""
    if schedule.every is not None:
        return IntervalTrigger(schedule.every)
    return DailyTrigger(schedule.at, schedule.timezone)
