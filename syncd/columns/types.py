"""The column types a configuration may name, and everything syncd knows about each.

The one place a type is described (docs/configuration.md lists them for users):

* `name`: how `columns` spells it in the YAML; it is also its SQL, in CREATE TABLE
  and ALTER TABLE ADD COLUMN;
* `canonical`: how PostgreSQL's format_type() reports it, which is what an existing
  table's column is checked against;
* `converter`: from a JSON value to the Python value stored (`syncd.columns.converters`):
  what is accepted, what is rejected and why;
* `write`: from that value to its cell, the text PostgreSQL reads back exactly
  (`syncd.columns.copy_formats`); `cell` goes from the JSON value to the cell in one
  step, by a `shortcut` where there is one (`syncd.columns.cells`);
* `escaped`: whether a cell can hold COPY's special characters (text and jsonb);
* `read`: from a cell back to a value that compares as the column's values do (keys
  are sorted, versions compared), where that is cheaper than the converter;
* `version_rank`: None unless its values order like versions, so that it can be an
  entity's `version_column`; then its place when the configuration lists the types
  a version column may have (timestamps first: the usual choice).

It sits in `columns`, below every layer but the root modules: the configuration
validates type names and version columns with it, the database layer creates and
formats columns with it, the sync layer converts values with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from syncd.columns import cells, converters, copy_formats
from syncd.columns.cells import Cell
from syncd.columns.converters import Converter
from syncd.columns.copy_formats import Writer


@dataclass(frozen=True)
class ColumnType:
    name: str
    make_converter: Callable[[ZoneInfo], Converter]  # given the source's time zone
    write: Writer
    reported_as: str | None = None  # None: format_type() says `name`
    version_rank: int | None = None
    escaped: bool = False
    shortcut: Callable[[Converter, ZoneInfo], Cell] | None = None  # given the converter
    # Reads a cell back as a value to compare (keys are sorted, versions compared);
    # None: the converter, which reads every cell its type writes.
    read: Callable[[str], Any] | None = None

    @property
    def sql(self) -> str:
        """The type as written in CREATE TABLE / ALTER TABLE ADD COLUMN."""
        return self.name

    @property
    def canonical(self) -> str:
        """The type as PostgreSQL's format_type() reports it."""
        return self.reported_as or self.name

    def converter(self, tz: ZoneInfo) -> Converter:
        """The function that turns a JSON value into this column's value; a time
        without an offset is read in `tz` (the source's time zone)."""
        return self.make_converter(tz)

    def cell(self, tz: ZoneInfo) -> Cell:
        """The function that turns a JSON value (not None) into this column's cell,
        accepting and rejecting exactly what `converter(tz)` does."""
        convert = self.make_converter(tz)
        if self.shortcut is not None:
            return self.shortcut(convert, tz)
        if self.write is copy_formats.itself:
            return convert
        return cells.written(convert, self.write)

    def reader(self, tz: ZoneInfo) -> Callable[[str], Any]:
        """The function that reads one of this type's cells back as a value that
        compares as PostgreSQL compares the column's values."""
        return self.read or self.make_converter(tz)


def _in_any_zone(converter: Converter) -> Callable[[ZoneInfo], Converter]:
    """For a type whose values do not depend on the source's time zone."""
    return lambda tz: converter


_REGISTRY = (
    ColumnType(
        "text",
        _in_any_zone(converters.to_text),
        copy_formats.itself,
        escaped=True,
        read=copy_formats.itself,
    ),
    ColumnType(
        "integer",
        _in_any_zone(converters.integer_within(converters.INT4)),
        copy_formats.plain,
        version_rank=3,
        read=int,
    ),
    ColumnType(
        "bigint",
        _in_any_zone(converters.integer_within(converters.INT8)),
        copy_formats.plain,
        version_rank=4,
        read=int,
    ),
    ColumnType("numeric", _in_any_zone(converters.to_numeric), copy_formats.plain, version_rank=5),
    ColumnType(
        "double precision",
        _in_any_zone(converters.to_double),
        copy_formats.exact_float,
        version_rank=6,
    ),
    ColumnType("boolean", _in_any_zone(converters.to_boolean), copy_formats.boolean),
    ColumnType("date", _in_any_zone(converters.to_date), copy_formats.iso, version_rank=2),
    ColumnType(
        "timestamp",
        _in_any_zone(converters.to_timestamp),
        copy_formats.iso,
        reported_as="timestamp without time zone",
        version_rank=1,
        shortcut=cells.timestamp_cell,
    ),
    ColumnType(
        "timestamptz",
        converters.timestamptz_in,
        copy_formats.iso,
        reported_as="timestamp with time zone",
        version_rank=0,
        shortcut=cells.timestamptz_cell,
    ),
    ColumnType(
        "uuid", _in_any_zone(converters.to_uuid), copy_formats.itself, read=copy_formats.itself
    ),
    ColumnType("jsonb", _in_any_zone(converters.to_jsonb), copy_formats.jsonb, escaped=True),
)

BY_NAME: Mapping[str, ColumnType] = {kind.name: kind for kind in _REGISTRY}

# The names `columns` accepts, in the order messages list them.
COLUMN_TYPES: tuple[str, ...] = tuple(BY_NAME)

# The names a version column's type may have, in the order messages list them.
VERSION_TYPES: tuple[str, ...] = tuple(
    name
    for _, name in sorted(
        (kind.version_rank, kind.name) for kind in _REGISTRY if kind.version_rank is not None
    )
)


def column_type(name: str) -> ColumnType:
    """The type called `name` (one of COLUMN_TYPES: the configuration accepts no
    other); KeyError for any other name."""
    return BY_NAME[name]
