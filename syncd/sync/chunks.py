"""Preload chunks: `[from, E)` cut at calendar boundaries in the source time zone.

Pure functions over datetimes. A boundary is a local midnight in the source zone `tz`:
every day (`d`), every Monday (`w`, ISO weeks), every 1st of a month (`mo`) or every
January 1st (`y`). A step of `N` units puts a boundary every `N` units counted from the
calendar boundary at or before `start`: `3mo` from 2024-02-10 anchors on 2024-02-01
and cuts at 2024-05-01, 2024-08-01, ... The first chunk starts at `start` exactly and
the last ends at `end` exactly, so either may be a partial period.

Time zone changes: a local midnight that does not exist (clocks jump forward at 00:00)
becomes the first instant after the gap; an ambiguous one is its first occurrence
(`fold=0`). Days of 23 or 25 hours are right. Chunk edges are returned in UTC, because
Python compares and subtracts two datetimes of the *same* zone by wall time, which is
wrong across such a change.

Every boundary is a whole local second, and `SourceTime.parse` reads a formatted local
time with the same `fold=0` rule, so a boundary formatted in `tz` reads back as the same
instant: the window edges the source sees are the chunk edges (pass the source's zone).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.config.model import CalendarStep
from syncd.sync.spans import Span


def plan_chunks(start: datetime, end: datetime, step: CalendarStep, tz: ZoneInfo) -> list[Span]:
    """Cut `[start, end)` into touching, non-empty chunks at `step` boundaries in `tz`
    (their edges in UTC)."""
    if step.n < 1:
        raise ValueError(f"calendar step {step} must be at least 1")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return []
    anchor = _period_start(start.astimezone(tz).date(), step)
    edges = [start]
    for k in itertools.count(1):
        boundary = _midnight(_advance(anchor, k * step.n, step), tz)
        if boundary >= end:
            break
        if boundary > edges[-1]:  # two skipped local days can share one instant
            edges.append(boundary)
    edges.append(end)
    return [Span(a, b) for a, b in itertools.pairwise(edges)]


def chunks_done(chunks: Sequence[Span], done_to: datetime | None) -> int:
    """How many chunks end at or before `done_to` (none when nothing is done yet)."""
    if done_to is None:
        return 0
    return sum(1 for chunk in chunks if chunk.end <= done_to)


def _period_start(day: date, step: CalendarStep) -> date:
    """The first day of the calendar period holding `day`."""
    if step.unit == "w":
        return day - timedelta(days=day.weekday())
    if step.unit == "mo":
        return day.replace(day=1)
    if step.unit == "y":
        return day.replace(month=1, day=1)
    return day


def _advance(anchor: date, count: int, step: CalendarStep) -> date:
    """`anchor` moved by `count` units (anchors are 1st of month/year, so no clamping)."""
    if step.unit == "d":
        return anchor + timedelta(days=count)
    if step.unit == "w":
        return anchor + timedelta(weeks=count)
    if step.unit == "mo":
        years, month0 = divmod(anchor.month - 1 + count, 12)
        return anchor.replace(year=anchor.year + years, month=month0 + 1)
    return anchor.replace(year=anchor.year + count)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight of `day` in UTC; `fold=0` gives the rules of the module docstring."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
