"""The progress display of `syncd preload`.

On a terminal: one line rewritten in place, at most every `REDRAW_INTERVAL` seconds.
Otherwise (a pipe, the journal): one plain line per chunk done. The clock is injected,
so tests step time instead of sleeping.

Rate is all records seen in this run over the time elapsed. The ETA assumes the
remaining chunks take as long as the mean chunk of this run: it is fixed when a chunk
ends (remaining chunks × mean chunk time) and counts down until the next one ends;
"-" until the first chunk of this run is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TextIO

BAR_WIDTH = 20
REDRAW_INTERVAL = 0.1  # seconds: at most ~10 redraws a second


class Progress:
    """Shows how far a preload of `total_chunks` chunks has come.

    `done` counts chunks finished by an earlier run: they fill the bar, but the rate
    and the ETA are measured on this run alone. `tz`, when given, is the zone chunk
    edges are shown in (the source's, typically); otherwise they are shown as passed.
    """

    def __init__(
        self,
        total_chunks: int,
        stream: TextIO,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        label: str = "",
        done: int = 0,
        tz: tzinfo | None = None,
    ) -> None:
        self._total = total_chunks
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._label = label
        self._tz = tz
        self._started = clock()
        self._done = done
        self._done_here = 0  # chunks finished by this run
        self._records = 0  # records of this run, the running chunk's included
        self._records_before_chunk = 0  # records of this run's finished chunks
        self._finish_at: float | None = None  # clock time the ETA counts down to
        self._drawn_at: float | None = None
        self._closed = False

    def records(self, n: int) -> None:
        """`n` more records committed within the running chunk (a page of it), so the
        terminal line moves during a long chunk, not only at its end."""
        self._records += n
        self._redraw()

    def chunk_done(self, chunk_start: datetime, chunk_end: datetime, records: int) -> None:
        """A chunk is committed; `records` is its own count, including any already
        reported through `records()` (those are not counted twice)."""
        now = self._clock()
        self._records = self._records_before_chunk + records
        self._records_before_chunk = self._records
        self._done += 1
        self._done_here += 1
        remaining = max(self._total - self._done, 0)
        self._finish_at = now + remaining * (now - self._started) / self._done_here
        if self._tty:
            self._redraw()
            return
        prefix = f"{self._label}: " if self._label else ""
        self._stream.write(
            f"{prefix}chunk {self._done}/{self._total} "
            f"{self._show(chunk_start)}..{self._show(chunk_end)} done, {records:,} records "
            f"({self._records:,} in all, {self._rate(now)} rec/s, ETA {self._eta(now)})\n"
        )
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the terminal line. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._tty:
            self._redraw(force=True)
            self._stream.write("\n")
            self._stream.flush()

    def _line(self) -> str:
        """The terminal line as it stands now."""
        now = self._clock()
        if self._total > 0:
            filled = min(BAR_WIDTH, self._done * BAR_WIDTH // self._total)
        else:
            filled = BAR_WIDTH  # nothing to do is all done
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        prefix = f"{self._label}  " if self._label else ""
        return (
            f"{prefix}[{bar}]  {self._done}/{self._total} chunks  {self._records:,} records  "
            f"{self._rate(now)} rec/s  ETA {self._eta(now)}"
        )

    def _redraw(self, *, force: bool = False) -> None:
        if not self._tty:
            return
        now = self._clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < REDRAW_INTERVAL:
            return
        self._drawn_at = now
        self._stream.write(f"\r{self._line()}\x1b[K")
        self._stream.flush()

    def _rate(self, now: float) -> str:
        elapsed = now - self._started
        return f"{self._records / elapsed:,.0f}" if elapsed > 0 else "-"

    def _eta(self, now: float) -> str:
        if self._done >= self._total:
            return _clock_time(0)
        if self._finish_at is None:
            return "-"
        return _clock_time(max(self._finish_at - now, 0))

    def _show(self, moment: datetime) -> str:
        return (moment if self._tz is None else moment.astimezone(self._tz)).isoformat(sep=" ")


def _clock_time(seconds: float) -> str:
    """`H:MM:SS`, hours unbounded: 0:03:12, 27:00:00."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"
