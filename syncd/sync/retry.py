"""When to try a source request again, and how long to wait first: a value object,
pure (no clock, no randomness, no I/O), so every decision is unit-tested.

The rules (docs/configuration.md, `source`: `retries.*`): `attempts` counts every try,
the first included. 401/403 are never retried (the key is wrong; retrying only
hammers the source), nor are other 4xx but 408 and 429 (the request itself is
wrong: a bad URL or parameter name). 429 waits what `Retry-After` asks, capped at
`max_backoff`. 5xx, 408, timeouts, connection errors and bodies that are not the
expected JSON wait a capped exponential backoff with "equal jitter".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from syncd.config.model import Retries

AUTH_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # tries of one request, the first included
    backoff: float = 0.5  # seconds before the second try; doubled for each later one
    max_backoff: float = 60.0  # seconds: no wait is longer, Retry-After included

    @classmethod
    def of(cls, retries: Retries) -> RetryPolicy:
        """The policy an entity's `source.retries` configures."""
        return cls(
            retries.attempts,
            retries.backoff.total_seconds(),
            retries.max_backoff.total_seconds(),
        )

    @staticmethod
    def retryable_status(status: int) -> bool:
        """Whether an answer with HTTP `status` (not 200) is worth another try."""
        return status >= 500 or status in (408, 429)

    def should_retry(self, attempt: int) -> bool:
        """Whether try number `attempt` (from 1), which failed in a retryable way (see
        `retryable_status`; a timeout, a lost connection or a body that is not the
        expected JSON always is), gets another."""
        return attempt < self.attempts

    def delay(self, attempt: int, retry_after: float | None = None, jitter: float = 0.5) -> float:
        """Seconds to wait after try number `attempt` failed. `retry_after`: what the
        source asked for (429), honoured up to `max_backoff`. Otherwise the backoff
        doubles each try, capped; `jitter` (in [0, 1), random in use) places the wait
        in the upper half of that: at least half, so a retry storm cannot form,
        spread over the other half, so many clients do not retry in step."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_backoff))
        capped = min(self.backoff * 2.0 ** (attempt - 1), self.max_backoff)
        return capped / 2 + jitter * capped / 2


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date. None when
    absent or unreadable; 0 for a date already past."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
