"""From a JSON value to the Python value a column of each type stores.

One pure function per column type (the registry in `syncd.columns.types` says which
serves which type); a value that does not fit raises `BadValue` saying why, which
the row builder turns into the record's reject. The rules (docs/configuration.md):

* timestamps are ISO 8601 (`T` or space, optional fraction, optional `Z`/±HH:MM);
  without an offset they are in the source time zone; a `timestamp` column keeps
  the value as written, a `timestamptz` column the instant;
* a `date` column takes `YYYY-MM-DD`;
* integers, numbers and booleans may also arrive as their text (`"42"`, `"true"`);
* text holds no NUL and no lone surrogate, jsonb no NaN or infinity either
  (PostgreSQL refuses them).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from psycopg2.extras import Json

from syncd.columns.json_number import Number, spelling

Converter = Callable[[Any], Any]

INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)


class BadValue(ValueError):
    """A value that does not fit its column; the message says why."""


def describe_value(value: Any) -> str:
    """A JSON value named for a message: its kind, or a string shown (cut at 40)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"'{shown}'"
    return repr(value)


_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")  # ASCII digits; more would be out of range


def integer_within(bounds: tuple[int, int]) -> Converter:
    """The converter for an integer column whose values lie within `bounds`."""
    low, high = bounds

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise BadValue(f"expected an integer, got {describe_value(value)}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            number = int(value)
        else:
            raise BadValue(f"expected an integer, got {describe_value(value)}")
        if not low <= number <= high:
            raise BadValue(f"{number} is out of range")
        return number

    return convert


def to_numeric(value: Any) -> Any:
    if isinstance(value, bool):
        raise BadValue(f"expected a number, got {describe_value(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, Number):
        # As the source wrote it: exact, however many digits (a float would round).
        return Decimal(value.text)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadValue(f"expected a finite number, got {value}")
        return value
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise BadValue(f"expected a number, got {describe_value(value)}") from None
        if not number.is_finite():
            raise BadValue(f"expected a finite number, got {describe_value(value)}")
        return number
    raise BadValue(f"expected a number, got {describe_value(value)}")


def to_double(value: Any) -> float:
    if isinstance(value, bool):
        raise BadValue(f"expected a number, got {describe_value(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise BadValue(f"expected a number, got {describe_value(value)}") from None
    raise BadValue(f"expected a number, got {describe_value(value)}")


def to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadValue(f"expected a boolean, got {describe_value(value)}")


def to_text(value: Any) -> str:
    if isinstance(value, str):
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise BadValue("text contains a NUL character")
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\ud800"
                raise BadValue("text is not valid Unicode (a lone surrogate)") from None
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return spelling(value)  # as the source wrote it: 1e999, not inf
    raise BadValue(f"expected text, got {describe_value(value)}")


def to_date(value: Any) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadValue(f"expected a date YYYY-MM-DD, got {describe_value(value)}")


def parse_record_time(value: Any) -> datetime:
    """ISO 8601 with `T` or a space, optional fraction, optional `Z` or ±HH:MM."""
    # (fromisoformat stops reading at a NUL and would take what came before it.)
    if isinstance(value, str) and len(value) >= 16 and value[10] in "T " and "\x00" not in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise BadValue(f"expected an ISO 8601 timestamp, got {describe_value(value)}")


def timestamptz_in(tz: ZoneInfo) -> Converter:
    """The converter for a timestamptz column: a time without an offset is in `tz`."""

    def convert(value: Any) -> datetime:
        moment = parse_record_time(value)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)

    return convert


def to_timestamp(value: Any) -> datetime:
    # "As written": the wall-clock reading in the record, whatever offset it names.
    return parse_record_time(value).replace(tzinfo=None)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def to_uuid(value: Any) -> str:
    if isinstance(value, str):
        if _CANONICAL_UUID.fullmatch(value):  # the usual spelling: 5x cheaper than UUID()
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise BadValue(f"expected a UUID, got {describe_value(value)}")


class JsonText(Json):
    """A jsonb value serialized once, when its row is built: COPY writes `text`, and
    psycopg2 quotes it (`dumps` returns it). Equal when the text is."""

    def __init__(self, text: str) -> None:
        super().__init__(None)
        self.text = text

    def dumps(self, obj: Any) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonText) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __lt__(self, other: JsonText) -> bool:  # keys are sorted to lock rows in order
        return self.text < other.text


# One encoder for all: json.dumps with options builds a new one on every call.
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False).encode


# JSON's escape of NUL, not preceded by an escaped backslash ("\\\\u0000" is text).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def json_text(value: Any) -> str:
    """`value` as JSON text that jsonb accepts, or BadValue saying why it cannot be."""
    try:
        text: str = _encode_json(value)
    except RecursionError:
        raise BadValue("nested too deeply to be written as JSON") from None
    except ValueError:
        raise BadValue("holds a number jsonb cannot: NaN or one beyond a double") from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise BadValue("holds a NUL character (\\u0000), which jsonb cannot")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise BadValue("holds a lone surrogate (e.g. \\ud800), which jsonb cannot") from None
    return text


def to_jsonb(value: Any) -> JsonText:
    return JsonText(json_text(value))
