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
from dataclasses import dataclass
from typing import Any

from syncd.columns.cells import Cell
from syncd.columns.converters import BadValue, describe_value
from syncd.columns.types import column_type
from syncd.config.model import RAW_COLUMN_TYPE, Entity
from syncd.db.rows import Reject, Row
from syncd.sync.jsonrecords import Undecodable

_ABSENT = object()


def _getter(path: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """Reads a dotted path (of two steps or more); absent or through null is `_ABSENT`."""

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
        fields = [
            _Field(
                name=".".join(col.field),
                path=col.field,
                cell=column_type(col.type).cell(tz),
                is_key=col.name in entity.primary_key,
            )
            for col in entity.columns
        ]
        raw = column_type(RAW_COLUMN_TYPE).cell(tz) if entity.keep_raw else None
        self._build = _compiled(fields, raw)

    def build(self, record: Any) -> Row | Reject:
        """The record's row, or its Reject: whatever is wrong with a record, never an
        exception (one bad record must not stop its page)."""
        if isinstance(record, Undecodable):
            return Reject(record.text, record.reason)
        if not isinstance(record, dict):
            return Reject(record, f"the record is {describe_value(record)}, not an object")
        try:
            return self._build(record)
        except Exception as exc:  # a converter's blind spot: this record only
            return Reject(record, f"the record cannot be converted ({type(exc).__name__})")


@dataclass(frozen=True)
class _Field:
    name: str  # the dotted path as the configuration writes it, for messages
    path: tuple[str, ...]
    cell: Cell
    is_key: bool


def _compiled(fields: list[_Field], raw: Cell | None) -> Callable[[dict[str, Any]], Row | Reject]:
    """The entity's row builder, written out as one Python function, field after field.

    It runs for every record of every page, and the loop over the fields was an eighth
    of its cost (the demo task's 16 columns: 9.2 µs a record with the loop, 7.9 µs
    written out): the generated function reads each field and calls its cell
    directly. Its text holds only literals (repr() of the configured names and
    messages) and the names of the functions it is handed, so nothing the
    configuration says is ever run as code; dataclasses and namedtuple write their
    methods the same way."""
    names: dict[str, Any] = {"Reject": Reject, "BadValue": BadValue, "_ABSENT": _ABSENT}
    body = ["def build(record):", "    get = record.get", "    field = ''", "    try:"]
    for i, field in enumerate(fields):
        names[f"cell{i}"] = field.cell
        body.append(f"        field = {field.name!r}")
        if len(field.path) == 1:  # a plain key: absent and null both read as None
            body.append(f"        v = get({field.path[0]!r})")
            missing = "v is None"
        else:
            names[f"path{i}"] = _getter(field.path)
            body.append(f"        v = path{i}(record)")
            missing = "v is None or v is _ABSENT"
        if field.is_key:
            reason = f"primary key field {field.name} is missing or null"
            body.append(f"        if {missing}:")
            body.append(f"            return Reject(record, {reason!r})")
            body.append(f"        c{i} = cell{i}(v)")
        else:
            body.append(f"        c{i} = None if {missing} else cell{i}(v)")
    body.append("    except BadValue as bad:")
    body.append("        return Reject(record, f'field {field}: {bad}')")
    cells = [f"c{i}" for i in range(len(fields))]
    if raw is not None:
        names["raw"] = raw
        body.append("    try:")
        body.append("        c_raw = raw(record)")
        body.append("    except BadValue as bad:")
        body.append("        return Reject(record, f'the whole record (keep_raw): {bad}')")
        cells.append("c_raw")
    body.append(f"    return ({', '.join(cells)},)")
    exec("\n".join(body), names)
    build: Callable[[dict[str, Any]], Row | Reject] = names["build"]
    return build
