"""`Span`: one stretch of source time, read as a unit (and `iso`, how one is shown).

An incremental run cuts its window into spans of at most `window.max` (windows.py);
a preload cuts its range into calendar chunks (chunks.py). Both are read the same
way, page by page, by the span writer (span_writer.py), so they share this one type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Span:
    """The half-open interval `[start, end)` of source time: `start` is read, `end`
    is not (it is the next span's start). Both are aware datetimes."""

    start: datetime
    end: datetime


def iso(moment: datetime | None) -> str | None:
    """A moment in ISO 8601, None kept: how logs and status JSON show times."""
    return moment.isoformat() if moment is not None else None
