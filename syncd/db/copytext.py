"""Rows as PostgreSQL COPY text: one line per row, tab-separated, `\\N` for NULL.

Formats the values `syncd.sync.records.RowBuilder` produces, each by its column
type's formatter (`syncd.columns.types`, formatters in `syncd.columns.copy_formats`)."""

from __future__ import annotations

from collections.abc import Sequence

from syncd.columns.types import column_type
from syncd.db.rows import Row


class CopyFormatter:
    """Formats rows whose columns have the given types."""

    def __init__(self, column_types: Sequence[str]) -> None:
        self.formatters = [column_type(name).copy_format for name in column_types]

    def line(self, row: Row) -> str:
        cells = [
            "\\N" if value is None else fmt(value)
            for fmt, value in zip(self.formatters, row, strict=True)
        ]
        return "\t".join(cells) + "\n"

    def text(self, rows: Sequence[Row]) -> bytes:
        line = self.line
        return "".join([line(row) for row in rows]).encode()
