"""From a source record (decoded JSON) to a row of cells, the text PostgreSQL reads.

A record that cannot be stored becomes a `Reject` with the reason, naming the
field; the rest of its page is unaffected. The rules (docs/configuration.md):

* an absent field, or a dotted path through a null object, is NULL;
* a missing or null primary-key field rejects the record;
* each value becomes its column's cell (`syncd.columns.types`, `ColumnType.cell`:
  what each type accepts is its converter's, in `syncd.columns.converters`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.columns.converters import BadValue, describe_value
from syncd.columns.types import column_type
from syncd.config.model import RAW_COLUMN_TYPE, Entity
from syncd.db.rows import Reject, Row
from syncd.sync.jsonrecords import Undecodable

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
                raise BadValue(f"{where} is {describe_value(node)}, not an object")
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
        self.raw = column_type(RAW_COLUMN_TYPE).cell(tz)
        # (name, top-level key or None, getter for a dotted path, cell, is key)
        self.fields = [
            (
                ".".join(col.field),
                col.field[0] if len(col.field) == 1 else None,
                _getter(col.field),
                column_type(col.type).cell(tz),
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
            return Reject(record, f"the record is {describe_value(record)}, not an object")
        values: list[str | None] = []
        # This loop runs for every field of every record: a plain key is read with
        # the dict's own get (absent and null both give None: both store NULL).
        append = values.append
        lookup = record.get
        name = ""
        try:
            for name, key, get, cell, is_key in self.fields:
                value = lookup(key) if key is not None else get(record)
                if value is None or value is _ABSENT:
                    if is_key:
                        return Reject(record, f"primary key field {name} is missing or null")
                    append(None)
                else:
                    append(cell(value))
        except BadValue as bad:
            return Reject(record, f"field {name}: {bad}")
        if self.keep_raw:
            try:
                values.append(self.raw(record))
            except BadValue as bad:
                return Reject(record, f"the whole record (keep_raw): {bad}")
        return tuple(values)
