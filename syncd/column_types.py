"""The column types a configuration may name, and everything syncd knows about each.

The one place a type is described (docs/configuration.md lists them for users):

* `name`: how `columns` spells it in the YAML, and the SQL used in CREATE/ALTER TABLE;
* `reported_as`: how PostgreSQL's format_type() names it, which is what an existing
  table is checked against;
* `converter`: from a JSON value to the Python value stored (`syncd.converters`);
* `copy_format`: from that value to its COPY text (`syncd.copy_formats`);
* `version_rank`: whether its values order like versions, so that it can be an
  entity's `version_column` (None when not), and its place when the configuration
  lists the types a version column may have (timestamps first: the usual choice).

It sits at the root, below every layer: the configuration validates type names and
version columns with it, the database layer creates and formats columns with it,
the sync layer converts values with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from syncd import converters as to
from syncd import copy_formats as fmt
from syncd.converters import Converter
from syncd.copy_formats import Formatter

# (`to.` and `fmt.` below: the registry reads as a table, one type a line.)


@dataclass(frozen=True)
class ColumnType:
    name: str
    copy_format: Formatter
    make_converter: Callable[[ZoneInfo], Converter]  # given the source's time zone
    reported_as: str = ""  # "" = the same as `name`
    version_rank: int | None = None

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


def _any_zone(converter: Converter) -> Callable[[ZoneInfo], Converter]:
    """For a type whose values do not depend on the source's time zone."""
    return lambda tz: converter


_REGISTRY = (
    ColumnType("text", fmt.text, _any_zone(to.to_text)),
    ColumnType("integer", fmt.plain, _any_zone(to.integer_within(to.INT4)), version_rank=3),
    ColumnType("bigint", fmt.plain, _any_zone(to.integer_within(to.INT8)), version_rank=4),
    ColumnType("numeric", fmt.plain, _any_zone(to.to_numeric), version_rank=5),
    ColumnType("double precision", fmt.exact_float, _any_zone(to.to_double), version_rank=6),
    ColumnType("boolean", fmt.boolean, _any_zone(to.to_boolean)),
    ColumnType("date", fmt.iso, _any_zone(to.to_date), version_rank=2),
    ColumnType(
        "timestamp",
        fmt.iso,
        _any_zone(to.to_timestamp),
        reported_as="timestamp without time zone",
        version_rank=1,
    ),
    ColumnType(
        "timestamptz",
        fmt.iso,
        to.timestamptz_in,
        reported_as="timestamp with time zone",
        version_rank=0,
    ),
    ColumnType("uuid", fmt.plain, _any_zone(to.to_uuid)),
    ColumnType("jsonb", fmt.jsonb, _any_zone(to.to_jsonb)),
)

BY_NAME: Mapping[str, ColumnType] = {column_type.name: column_type for column_type in _REGISTRY}

# The names `columns` accepts, in the order messages list them.
COLUMN_TYPES: tuple[str, ...] = tuple(BY_NAME)

# The names a version column's type may have, in the order messages list them.
VERSION_TYPES: tuple[str, ...] = tuple(
    name
    for _, name in sorted((t.version_rank, t.name) for t in _REGISTRY if t.version_rank is not None)
)


def column_type(name: str) -> ColumnType:
    """The type `name` (one of COLUMN_TYPES; the configuration accepts no other)."""
    return BY_NAME[name]
