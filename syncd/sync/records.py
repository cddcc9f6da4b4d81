"""From a source record (decoded JSON) to a row of typed column values.

A record that cannot be stored becomes a `Reject` with the reason, naming the
field; the rest of its page is unaffected. Conventions (CONTRACT §9):

* an absent field, or a dotted path through a null object, is NULL;
* a missing or null primary-key field rejects the record;
* timestamps are ISO 8601 (`T` or space, optional fraction, optional `Z`/±HH:MM);
  without an offset they are in the source time zone; a `timestamp` column keeps
  the value as written, a `timestamptz` column the instant;
* a `date` column takes `YYYY-MM-DD`.
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

from syncd.config.model import Entity
from syncd.db.rows import Reject, Row
from syncd.sync.jsonrecords import Number, Undecodable, spelling

Converter = Callable[[Any], Any]

INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)


class BadValue(ValueError):
    """A value that does not fit its column; the message says why."""


def _describe(value: Any) -> str:
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


def _integer(bounds: tuple[int, int]) -> Converter:
    low, high = bounds

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise BadValue(f"expected an integer, got {_describe(value)}")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            number = int(value)
        else:
            raise BadValue(f"expected an integer, got {_describe(value)}")
        if not low <= number <= high:
            raise BadValue(f"{number} is out of range")
        return number

    return convert


def _numeric(value: Any) -> Any:
    if isinstance(value, bool):
        raise BadValue(f"expected a number, got {_describe(value)}")
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
            raise BadValue(f"expected a number, got {_describe(value)}") from None
        if not number.is_finite():
            raise BadValue(f"expected a finite number, got {_describe(value)}")
        return number
    raise BadValue(f"expected a number, got {_describe(value)}")


def _double(value: Any) -> float:
    if isinstance(value, bool):
        raise BadValue(f"expected a number, got {_describe(value)}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise BadValue(f"expected a number, got {_describe(value)}") from None
    raise BadValue(f"expected a number, got {_describe(value)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadValue(f"expected a boolean, got {_describe(value)}")


def _text(value: Any) -> str:
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
    raise BadValue(f"expected text, got {_describe(value)}")


def _date(value: Any) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadValue(f"expected a date YYYY-MM-DD, got {_describe(value)}")


def parse_record_time(value: Any) -> datetime:
    """ISO 8601 with `T` or a space, optional fraction, optional `Z` or ±HH:MM."""
    # (fromisoformat stops reading at a NUL and would take what came before it.)
    if isinstance(value, str) and len(value) >= 16 and value[10] in "T " and "\x00" not in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise BadValue(f"expected an ISO 8601 timestamp, got {_describe(value)}")


def _timestamptz(tz: ZoneInfo) -> Converter:
    def convert(value: Any) -> datetime:
        moment = parse_record_time(value)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)

    return convert


def _timestamp(value: Any) -> datetime:
    # "As written": the wall-clock reading in the record, whatever offset it names.
    return parse_record_time(value).replace(tzinfo=None)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: Any) -> str:
    if isinstance(value, str):
        if _CANONICAL_UUID.fullmatch(value):  # the usual spelling: 5x cheaper than UUID()
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise BadValue(f"expected a UUID, got {_describe(value)}")


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


def _jsonb(value: Any) -> JsonText:
    return JsonText(json_text(value))


def converter_for(column_type: str, tz: ZoneInfo) -> Converter:
    """The function that turns a JSON value into a value for a `column_type` column."""
    converters: dict[str, Converter] = {
        "text": _text,
        "integer": _integer(INT4),
        "bigint": _integer(INT8),
        "numeric": _numeric,
        "double precision": _double,
        "boolean": _boolean,
        "date": _date,
        "timestamp": _timestamp,
        "timestamptz": _timestamptz(tz),
        "uuid": _uuid,
        "jsonb": _jsonb,
    }
    return converters[column_type]


_ABSENT = object()


def _getter(path: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """Reads a dotted path; absent or through null is `_ABSENT`."""
    if len(path) == 1:
        key = path[0]
        return lambda record: record.get(key, _ABSENT)

    def get(record: dict[str, Any]) -> Any:
        node: Any = record
        for depth, step in enumerate(path):
            if node is None:
                return _ABSENT
            if not isinstance(node, dict):
                where = ".".join(path[:depth])
                raise BadValue(f"{where} is {_describe(node)}, not an object")
            node = node.get(step, _ABSENT)
            if node is _ABSENT:
                return _ABSENT
        return node

    return get


class RowBuilder:
    """Builds rows for one entity: `columns` order, then the raw record if kept."""

    def __init__(self, entity: Entity) -> None:
        tz = entity.source.timezone
        self.keep_raw = entity.keep_raw
        # (name, top-level key or None, getter for a dotted path, converter, is key)
        self.fields = [
            (
                ".".join(col.field),
                col.field[0] if len(col.field) == 1 else None,
                _getter(col.field),
                converter_for(col.type, tz),
                col.name in entity.primary_key,
            )
            for col in entity.columns
        ]

    def build(self, record: Any) -> Row | Reject:
        """The record's row, or its Reject: whatever is wrong with a record, never an
        exception (one bad record must not stop its page)."""
        try:
            return self._build(record)
        except Exception as exc:  # a converter's blind spot: this record only
            return Reject(record, f"the record cannot be converted ({type(exc).__name__})")

    def _build(self, record: Any) -> Row | Reject:
        if isinstance(record, Undecodable):
            return Reject(record.text, record.reason)
        if not isinstance(record, dict):
            return Reject(record, f"the record is {_describe(record)}, not an object")
        values: list[Any] = []
        # This loop runs for every field of every record: a plain key is read with
        # the dict's own get (absent and null both give None: both store NULL).
        append = values.append
        lookup = record.get
        name = ""
        try:
            for name, key, get, convert, is_key in self.fields:
                value = lookup(key) if key is not None else get(record)
                if value is None or value is _ABSENT:
                    if is_key:
                        return Reject(record, f"primary key field {name} is missing or null")
                    append(None)
                else:
                    append(convert(value))
        except BadValue as bad:
            return Reject(record, f"field {name}: {bad}")
        if self.keep_raw:
            try:
                values.append(_jsonb(record))
            except BadValue as bad:
                return Reject(record, f"the whole record (keep_raw): {bad}")
        return tuple(values)
