"""Plain parsers of setting values: durations, sizes, calendar steps, timestamps, time
zones, strftime formats and times of day.

Each takes the text as written and returns the value or raises ValueError with a
message fit to show the operator as is (it becomes `FILE:LINE: key.path: message` in
the loader, or a usage error for a command-line option such as `--from` or `--chunk`).
They know nothing of YAML, so the command line and the configuration loader share them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.config.model import CalendarStep

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_DURATION_HINT = "expected a whole number and a unit: ms, s, m (minutes), h or d, e.g. 30s or 5m"
# Longer durations only overflow date arithmetic (a lookback of a million days reaches
# before year 1) and mean nothing to a schedule or a timeout.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """`500ms`, `30s`, `5m` (minutes), `1h`, `1d`, `0s`. A unit is always required."""
    stripped = text.strip()
    match = _DURATION.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r"[0-9]+", stripped):
            raise ValueError(f"{text!r} has no unit; {_DURATION_HINT}")
        if re.fullmatch(r"[0-9]+(mo|w|y)", stripped):
            raise ValueError(f"{text!r} is a calendar step, not a duration; {_DURATION_HINT}")
        raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
    try:
        duration = int(match[1]) * _DURATION_UNITS[match[2]]
    except OverflowError:
        duration = MAX_DURATION * 2
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 3650d, the longest duration syncd accepts")
    return duration


_SIZE = re.compile(r"([0-9]+)(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes: an int, digits, or digits with `KiB`, `MiB` or `GiB`. `KB`/`MB`
    are refused: it would be unclear whether they mean 1000 or 1024."""
    if isinstance(text, bool):  # bool is an int subclass; `true` is no size
        raise ValueError("a size is a number of bytes, not a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; a size is a number of bytes")
        return text
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; expected bytes, or e.g. 512KiB or 16MiB")
    return int(match[1]) * _SIZE_UNITS[match[2]]


_STEP = re.compile(r"([0-9]+)(d|w|mo|y)")
_STEP_UNITS: dict[str, Literal["d", "w", "mo", "y"]] = {"d": "d", "w": "w", "mo": "mo", "y": "y"}
_STEP_MAX = {"d": 36525, "w": 5218, "mo": 1200, "y": 100}  # 100 years


def parse_calendar_step(text: str) -> CalendarStep:
    """`1d`, `2w`, `1mo`, `1y`. `1m` is refused: minutes make no calendar step,
    so it is most likely a month written ambiguously."""
    stripped = text.strip()
    match = _STEP.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r"[0-9]+m", stripped):
            raise ValueError(f"{text!r} is ambiguous; write {stripped}o for months")
        raise ValueError(f"{text!r} is not a calendar step; expected e.g. 1d, 1w, 1mo or 1y")
    count = int(match[1])
    if count < 1:
        raise ValueError(f"{text!r}: a calendar step must be at least 1")
    if count > _STEP_MAX[match[2]]:
        raise ValueError(f"{text!r} is longer than 100 years, the longest calendar step")
    return CalendarStep(count, _STEP_UNITS[match[2]])


_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"(?P<offset>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)


# Years a configured timestamp may name: window and chunk arithmetic stays within what
# datetime holds, and every year formats as four digits that strptime reads back.
FIRST_YEAR, LAST_YEAR = 1900, 9000


def parse_timestamp(text: str, tz: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` or ISO 8601 (`T` or space, optional seconds and
    fraction, optional `Z`/`±HH:MM`; a date alone is midnight). Without an
    offset the time is read in `tz`. Always returns an aware datetime: in `tz`
    when no offset was given (so a wall time in a repeated DST hour compares
    unequal to any time in another zone, PEP 495; compare in UTC), else in the
    given fixed offset. Years FIRST_YEAR to LAST_YEAR."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a timestamp; expected YYYY-MM-DD HH:MM:SS or ISO 8601")
    if not FIRST_YEAR <= int(match["year"]) <= LAST_YEAR:
        raise ValueError(f"{text!r}: the year must be between {FIRST_YEAR} and {LAST_YEAR}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")  # finer than microseconds: cut
    year, month, day, hour, minute, second = (
        int(match[name] or 0) for name in ("year", "month", "day", "hour", "minute", "second")
    )
    try:
        naive = datetime(year, month, day, hour, minute, second, int(fraction))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
    if match["offset"] is None:
        return _localize(naive, tz)
    return naive.replace(tzinfo=_utc_offset(match["offset"], text))


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # A wall time can occur twice (clocks going back) or never (clocks going
    # forward). fold=0 picks the first of two; a skipped time is read with the
    # offset in force before the jump, and the round trip through UTC turns it
    # into the real wall time after the gap (PEP 495). Neither is an error: a
    # timestamp must not be refused for lying near a DST change.
    aware = naive.replace(tzinfo=tz, fold=0)
    return aware.astimezone(UTC).astimezone(tz)


def _utc_offset(text: str, whole: str) -> timezone:
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{whole!r} has an impossible UTC offset {text}")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def parse_zone(name: str) -> ZoneInfo:
    """An IANA time zone name such as `UTC` or `Asia/Kolkata`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        hint = "expected an IANA name such as UTC or Asia/Kolkata"
        raise ValueError(f"{name!r} is not a known time zone; {hint}") from None


def parse_time_format(text: str) -> str:
    """A strftime format for the source's time parameters, returned unchanged once it
    is known to hold a directive and to read back what it writes."""
    if "%" not in text:
        raise ValueError(f"{text!r} has no % directive: every timestamp would look the same")
    try:
        sample = datetime(2001, 2, 3, 4, 5, 6).strftime(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a strftime format ({exc})") from None
    try:
        # syncd reads its own toTime back to store it as the watermark.
        datetime.strptime(sample, text)
    except ValueError:
        raise ValueError(f"{text!r} cannot be read back with strptime") from None
    return text


def parse_time_of_day(text: str) -> time:
    """`HH:MM`, 24-hour, as in `schedule.at`."""
    match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day; expected HH:MM such as 00:00 or 19:14")
    return time(int(match[1]), int(match[2]))
