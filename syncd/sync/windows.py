"""Time windows of an incremental run: pure functions over datetimes.

The source sees times only as formatted strings (`time_format` in `timezone`), so
every bound syncd keeps (a window's edges, the watermark) is the *formatted* value
read back: what the source was told, truncated to the format's precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from syncd.config.model import Entity, Window
from syncd.sync.spans import Span


@dataclass(frozen=True)
class SourceTime:
    """How times are written in the source's query parameters."""

    fmt: str
    tz: ZoneInfo

    @classmethod
    def of(cls, entity: Entity) -> SourceTime:
        """How `entity`'s source is sent times (`source.time_format`, `source.timezone`)."""
        return cls(entity.source.time_format, entity.source.timezone)

    def format(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).strftime(self.fmt)

    def parse(self, text: str) -> datetime:
        """Read back a formatted time as an aware datetime in the source zone.

        `fold=0` picks the first of an ambiguous local time; formats without an
        offset cannot say more, and the window edges stay monotonic because the
        planner only ever moves forward from the parsed watermark."""
        naive = datetime.strptime(text, self.fmt)
        if naive.tzinfo is not None:
            return naive
        return naive.replace(tzinfo=self.tz)

    def truncate(self, moment: datetime) -> datetime:
        """The moment as the source will understand it once formatted."""
        return self.parse(self.format(moment))


def plan_pieces(
    watermark: datetime, now: datetime, window: Window, source_time: SourceTime
) -> list[Span]:
    """Split `[watermark - lookback, now - lag)` into pieces no longer than `window.max`;
    each piece's end is the watermark committed once it is read.

    The first piece reaches back by `lookback` (late-visible records); later pieces
    start exactly where the previous one ended. Every edge is a formatted time, so
    the watermark committed after a piece is exactly the `toTime` the source saw.
    An empty list means there is nothing to read yet.
    """
    end = source_time.truncate(now - window.lag)
    if end < watermark:  # the clock stepped back: read nothing, never move backwards
        return []
    start = source_time.truncate(watermark - window.lookback)
    pieces: list[Span] = []
    while start < end:
        piece_end = min(end, source_time.truncate(start + window.max))
        if piece_end <= start:  # the format is coarser than window.max: take the rest whole
            piece_end = end
        pieces.append(Span(start, piece_end))
        start = piece_end
    return pieces
