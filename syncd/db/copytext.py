"""Rows as PostgreSQL COPY text: one line per row, tab-separated, `\\N` for NULL.

Formats the values `records.RowBuilder` produces, by column type. Only text and
jsonb can hold the characters COPY treats specially (backslash, tab, newline,
carriage return); everything else formats to plain ASCII."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from syncd.db.rows import Row

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
Formatter = Callable[[Any], str]


_SPECIAL = re.compile(r"[\\\t\n\r]")


def _text(value: Any) -> str:
    text = str(value)
    # Most values hold no special character: searching is far cheaper than translating.
    return text.translate(_ESCAPES) if _SPECIAL.search(text) else text


def _boolean(value: Any) -> str:
    return "t" if value else "f"


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _jsonb(value: Any) -> str:
    # RowBuilder hands jsonb values over as JSON text already (records.JsonText).
    return _text(value.text)


FORMATTERS: dict[str, Formatter] = {
    "text": _text,
    "uuid": str,
    "integer": str,
    "bigint": str,
    "numeric": str,  # int, Decimal; a float's str is its repr
    "double precision": repr,
    "boolean": _boolean,
    "date": _iso,
    "timestamp": _iso,
    "timestamptz": _iso,
    "jsonb": _jsonb,
}


class CopyFormatter:
    """Formats rows whose columns have the given types."""

    def __init__(self, column_types: Sequence[str]) -> None:
        self.formatters = [FORMATTERS[col_type] for col_type in column_types]

    def line(self, row: Row) -> str:
        cells = [
            "\\N" if value is None else fmt(value)
            for fmt, value in zip(self.formatters, row, strict=True)
        ]
        return "\t".join(cells) + "\n"

    def text(self, rows: Sequence[Row]) -> bytes:
        line = self.line
        return "".join([line(row) for row in rows]).encode()
