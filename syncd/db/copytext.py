"""Rows as PostgreSQL COPY text: one line per row, tab-separated, `\\N` for NULL.

A row's values are already the text PostgreSQL reads (its cells, `syncd.columns.cells`):
a line only escapes the columns whose type can hold COPY's special characters (text
and jsonb, `ColumnType.escaped`)."""

from __future__ import annotations

from collections.abc import Sequence

from syncd.columns.copy_formats import escape
from syncd.columns.types import column_type
from syncd.db.rows import Row


class CopyFormatter:
    """Formats rows whose columns have the given types."""

    def __init__(self, column_types: Sequence[str]) -> None:
        self.escaped = [i for i, name in enumerate(column_types) if column_type(name).escaped]

    def line(self, row: Row) -> str:
        cells = ["\\N" if value is None else value for value in row]
        for i in self.escaped:
            if row[i] is not None:
                cells[i] = escape(cells[i])
        return "\t".join(cells) + "\n"

    def text(self, rows: Sequence[Row]) -> bytes:
        line = self.line
        return "".join([line(row) for row in rows]).encode()
