"""Log lines written at most once a while per key: an outage, or a client repeating a
request, must not write a line per request."""

from __future__ import annotations

import time


class RateLimited:
    """At most one line per `every` seconds per key, with a count of those left out."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, left out since)

    def due(self, key: str) -> dict[str, int] | None:
        """None if `key` was logged within `every`; else the fields to add to the line."""
        now = time.monotonic()
        logged_at, left_out = self._last.get(key, (float("-inf"), 0))
        if now - logged_at < self.every:
            self._last[key] = (logged_at, left_out + 1)
            return None
        self._last[key] = (now, 0)
        return {"similar_left_out": left_out} if left_out else {}
