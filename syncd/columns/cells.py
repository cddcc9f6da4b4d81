"""From a JSON value to its cell: the text PostgreSQL reads as the column's value.

A row is a tuple of cells, one per column, None for NULL (`syncd.db.rows.Row`). COPY
writes them as they are, escaped where the type can hold COPY's special characters
(text and jsonb); `execute_values` sends them as quoted literals, which INSERT reads
as each column's type. So a record goes to the text the database reads in one step:
no datetime, Decimal or UUID object is made only to be printed again.

Each type's cell is its converter's value (`syncd.columns.converters`, which decides
what is accepted and what is rejected, and why) written as PostgreSQL input text.
One shape is read far cheaper than it is converted: a timestamp written the usual
way (`YYYY-MM-DD`, `T` or a space, `HH:MM:SS`, up to six decimals), whose every field
is in range by the pattern alone, is passed through as the source wrote it: with its
offset for a `timestamptz` column (or with `+00:00` added when it has none and the
source's zone is UTC), without it for a `timestamp` column, whose value is the
wall-clock reading whatever the offset. 0.3 µs against 2.6 µs to parse it and write it
out again. Anything the pattern does not take (a day past the 28th, seven decimals, a
comma, a reading without an offset in a zone with summer time) goes through the
converter, which accepts or rejects it exactly as before, and places a reading in a
zone with summer time as Python's zoneinfo does (PostgreSQL does not always agree).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from syncd.columns.converters import Converter

Cell = Callable[[Any], str]  # a JSON value (never None) to its cell, or BadValue

_DATE_TIME = (
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
)
# The offsets both Python and PostgreSQL read: Z, or hours up to 14 with minutes.
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])"
_WITH_OFFSET = re.compile(_DATE_TIME + _OFFSET)
_WITHOUT_OFFSET = re.compile(_DATE_TIME)
_READING = re.compile(f"({_DATE_TIME}){_OFFSET}?")


def written(convert: Converter, write: Callable[[Any], str]) -> Cell:
    """The cell of a type with no shortcut: the converted value, written out."""
    return lambda value: write(convert(value))


# Zones that are UTC all year: a reading without an offset is that instant at +00:00.
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Zulu"})


def timestamptz_cell(convert: Converter, tz: ZoneInfo) -> Cell:
    """A timestamptz: an instant with its offset passes through, and so does one without
    an offset from a source in UTC (with `+00:00` added); any other reading without an
    offset is placed in the source's zone by the converter (`convert` was made for
    it), which knows what a summer-time change does to it."""
    match = _WITH_OFFSET.fullmatch
    in_utc = _WITHOUT_OFFSET.fullmatch if tz.key in UTC_ZONES else None

    def cell(value: Any) -> str:
        if type(value) is str:
            if match(value):
                return value
            if in_utc is not None and in_utc(value):
                return value + "+00:00"
        return str(convert(value).isoformat())

    return cell


def timestamp_cell(convert: Converter, tz: ZoneInfo) -> Cell:
    """A timestamp: the wall-clock reading as written, any offset left out."""
    match = _READING.fullmatch

    def cell(value: Any) -> str:
        if type(value) is str and (found := match(value)):
            return found[1]
        return str(convert(value).isoformat())

    return cell
