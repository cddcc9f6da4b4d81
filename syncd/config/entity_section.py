"""Reading the `entities` section: each entity's URL, table, columns and keys, its
schedule, window, preload and push path (see "`entities.NAME`" in
docs/configuration.md).

Names must be unique where two entities would otherwise step on each other (a table,
an ingest path), and an entity's key columns must be among its declared columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import time
from zoneinfo import ZoneInfo

from syncd.columns.types import COLUMN_TYPES, VERSION_TYPES
from syncd.config.http_paths import is_builtin_path
from syncd.config.model import (
    RAW_COLUMN,
    Column,
    Entity,
    Preload,
    Schedule,
    SourceConfig,
    Window,
)
from syncd.config.source_section import SourceSection
from syncd.config.tree_reader import Fields
from syncd.config.value_readers import IDENTIFIER, IDENTIFIER_RULE, ValueReaders
from syncd.config.values import parse_calendar_step, parse_time_of_day, parse_zone
from syncd.config.yaml_tree import Map, Node, Seq, is_null

_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]*")

_RESERVED_TABLES = ("sync_time", "sync_state", "sync_rejects")  # syncd's own, same schema
_ENTITY_KEYS = (
    "url",
    "table",
    "primary_key",
    "columns",
    "version_column",
    "keep_raw",
    "schedule",
    "window",
    "preload",
    "ingest_path",
    "source",
)

Columns = tuple[Column, ...]


class EntitySection:
    """Reads the `entities` section, with the value readers it is given (which collect
    the problems) and the `source` section's reader for each entity's own `source`."""

    def __init__(self, read: ValueReaders, sources: SourceSection) -> None:
        self.read = read
        self.sources = sources

    def entities(self, node: Node, path: str, source: SourceConfig) -> dict[str, Entity] | None:
        if not isinstance(node, Map):
            self.read.wrong_type(node, path, "a mapping of entity names to entities")
            return None
        if not node.entries:
            self.read.problem(node.line, path, "declare at least one entity")
        entities: dict[str, Entity] = {}
        for name, child in node.entries.items():
            if not _ENTITY_NAME.fullmatch(name):
                rule = "lowercase letters, digits and _, starting with a letter"
                self.read.problem(
                    child.line, f"{path}.{name}", f"{name!r} is not an entity name ({rule})"
                )
            entities[name] = self.entity(name, child, f"{path}.{name}", source)
        self.check_unique(node, entities, "table", lambda entity: entity.table)
        self.check_unique(node, entities, "ingest_path", lambda entity: entity.ingest_path)
        return entities

    def check_unique(
        self,
        node: Map,
        entities: Mapping[str, Entity],
        key: str,
        get: Callable[[Entity], str | None],
    ) -> None:
        """Two entities writing one table, or sharing an ingest path, would step on each other."""
        owners: dict[str, str] = {}
        for name, entity in entities.items():
            value = get(entity)
            if value and value in owners:
                child = node.entries[name]
                line = child.entries[key].line if isinstance(child, Map) else child.line
                message = f"{value!r} is already used by entity {owners[value]}"
                self.read.problem(line, f"entities.{name}.{key}", message)
            elif value:
                owners[value] = name

    def entity(self, name: str, node: Node, path: str, top_source: SourceConfig) -> Entity:
        placeholder = Entity(name, url="", table="", primary_key=(), columns=(), source=top_source)
        fields = self.read.fields(node, path, _ENTITY_KEYS) if isinstance(node, Map) else None
        if fields is None:
            self.read.wrong_type(node, path, "a mapping (url, table, primary_key, columns, ...)")
            return placeholder
        keep_raw = fields.opt("keep_raw", self.read.boolean, False)
        # None when missing or broken: then primary_key and version_column are not matched.
        columns = fields.req("columns", lambda n, p: self.columns(n, p, keep_raw), None)
        source = fields.opt(
            "source", lambda n, p: self.sources.source(n, p, top_source), top_source
        )
        tz = source.timezone  # config timestamps without an offset are in the source's zone
        preload = fields.opt("preload", lambda n, p: self.preload(n, p, tz), None)
        if preload is None and "preload" not in fields:
            preload = Preload()
        if preload is not None and not preload.enabled:
            self.check_start(fields)
        return Entity(
            name=name,
            url=fields.req("url", self.read.url, ""),
            table=fields.req("table", self.table, ""),
            primary_key=fields.req("primary_key", lambda n, p: self.primary_key(n, p, columns), ()),
            columns=columns or (),
            source=source,
            version_column=fields.opt(
                "version_column", lambda n, p: self.version_column(n, p, columns), None
            ),
            keep_raw=keep_raw,
            schedule=fields.opt("schedule", self.schedule, placeholder.schedule),
            window=fields.opt("window", lambda n, p: self.window(n, p, tz), Window()),
            preload=preload or Preload(),
            ingest_path=fields.opt("ingest_path", self.ingest_path, None),
        )

    def check_start(self, fields: Fields) -> None:
        """Without preload, the first incremental sync starts at window.initial_from,
        which is then required (docs/configuration.md, "`entities.NAME`")."""
        window = fields.get("window")
        if isinstance(window, Map) and is_null(window.entries.get("initial_from")):
            line = window.line
        elif window is None:
            line = fields.node.line
        else:  # given (checked by `window`), or the window itself is broken (reported)
            return
        message = "missing required key (needed when preload is not enabled)"
        self.read.problem(line, fields.key_path("window.initial_from"), message)

    def table(self, node: Node, path: str) -> str | None:
        value = self.read.identifier(node, path)
        if value in _RESERVED_TABLES:
            self.read.problem(node.line, path, f"{value!r} is one of syncd's own tables")
            return None
        return value

    def columns(self, node: Node, path: str, keep_raw: bool) -> Columns | None:
        if not isinstance(node, Map):
            self.read.wrong_type(node, path, "a mapping of column names to {field, type}")
            return None
        if not node.entries:
            self.read.problem(node.line, path, "declare at least one column")
        for name, spec in node.entries.items():
            if not IDENTIFIER.fullmatch(name):
                self.read.problem(spec.line, f"{path}.{name}", f"{name!r} is not {IDENTIFIER_RULE}")
            elif keep_raw and name == RAW_COLUMN:
                message = f"{RAW_COLUMN!r} is reserved for the whole record when keep_raw is true"
                self.read.problem(spec.line, f"{path}.{name}", message)
        return tuple(
            self.column(name, spec, f"{path}.{name}") for name, spec in node.entries.items()
        )

    def column(self, name: str, node: Node, path: str) -> Column:
        # A column with problems still counts as declared, so that primary_key
        # and version_column are not also reported as naming an unknown column.
        fields = self.read.fields(node, path, ("field", "type"))
        if fields is None:
            return Column(name=name, field=(name,), type="")
        return Column(
            name=name,
            field=fields.opt("field", self.read.dotted, (name,)),
            type=fields.req("type", self.column_type, ""),
        )

    def column_type(self, node: Node, path: str) -> str | None:
        value = self.read.text(node, path)
        if value is not None and value not in COLUMN_TYPES:
            expected = ", ".join(COLUMN_TYPES)
            self.read.problem(
                node.line, path, f"{value!r} is not a type; expected one of {expected}"
            )
            return None
        return value

    def declared(self, node: Node, path: str, columns: Columns | None) -> str | None:
        """The name of one of the columns (not checked when the columns are broken)."""
        name = self.read.text(node, path)
        if name is not None and columns is not None and name not in {c.name for c in columns}:
            self.read.problem(node.line, path, f"{name!r} is not a declared column")
            return None
        return name

    def primary_key(self, node: Node, path: str, columns: Columns | None) -> tuple[str, ...] | None:
        if not isinstance(node, Seq):
            self.read.wrong_type(node, path, "a list of column names")
            return None
        if not node.items:
            self.read.problem(node.line, path, "name at least one column")
        names: list[str] = []
        for index, item in enumerate(node.items):
            name = self.declared(item, f"{path}[{index}]", columns)
            if name in names:
                self.read.problem(item.line, f"{path}[{index}]", f"{name!r} is named twice")
            elif name is not None:
                names.append(name)
        return tuple(names)

    def version_column(self, node: Node, path: str, columns: Columns | None) -> str | None:
        name = self.declared(node, path, columns)
        kind = next((column.type for column in columns or () if column.name == name), "")
        if kind and kind not in VERSION_TYPES:  # "" = unknown (a broken column)
            expected = ", ".join(VERSION_TYPES)
            message = f"column {name!r} is {kind}; a version column must be {expected}"
            self.read.problem(node.line, path, message)
            return None
        return name

    def schedule(self, node: Node, path: str) -> Schedule | None:
        fields = self.read.fields(node, path, ("every", "at", "timezone"))
        if fields is None:
            return None
        given = [key for key in ("every", "at") if key in fields]
        if len(given) != 1:
            self.read.problem(node.line, path, "give exactly one of every and at")
            return None
        if given == ["every"]:
            every = fields.opt("every", self.read.duration(positive=True), None)
            if "timezone" in fields:
                line = fields.entries["timezone"].line
                self.read.problem(line, fields.key_path("timezone"), "only goes with at, not every")
            return Schedule(every=every)
        return Schedule(
            at=fields.opt("at", self.times, ()),
            timezone=fields.opt("timezone", self.read.parsed(parse_zone), ZoneInfo("UTC")),
        )

    def times(self, node: Node, path: str) -> tuple[time, ...] | None:
        if not isinstance(node, Seq) or not node.items:
            self.read.wrong_type(node, path, 'a list of times of day such as ["00:00", "12:00"]')
            return None
        read = self.read.parsed(parse_time_of_day, self.read.text_as_written)
        times = [read(item, f"{path}[{index}]") for index, item in enumerate(node.items)]
        return tuple(sorted({t for t in times if t is not None}))

    def window(self, node: Node, path: str, tz: ZoneInfo) -> Window | None:
        fields = self.read.fields(node, path, ("lookback", "lag", "max", "initial_from"))
        if fields is None:
            return None
        default = Window()
        return Window(
            lookback=fields.opt("lookback", self.read.duration(), default.lookback),
            lag=fields.opt("lag", self.read.duration(), default.lag),
            max=fields.opt("max", self.read.duration(positive=True), default.max),
            initial_from=fields.opt("initial_from", self.read.timestamp(tz), None),
        )

    def preload(self, node: Node, path: str, tz: ZoneInfo) -> Preload | None:
        fields = self.read.fields(node, path, ("from", "chunk", "enabled"))
        if fields is None:
            return None
        # Writing a preload mapping means wanting a preload, unless it says otherwise.
        enabled = fields.opt("enabled", self.read.boolean, True)
        read_from = fields.req if enabled else fields.opt
        return Preload(
            enabled=enabled,
            from_=read_from("from", self.read.timestamp(tz), None),
            chunk=fields.opt("chunk", self.read.parsed(parse_calendar_step), Preload().chunk),
        )

    def ingest_path(self, node: Node, path: str) -> str | None:
        value = self.read.text(node, path)
        if value is None:
            return None
        if not value.startswith("/") or any(c.isspace() or c in "?#" for c in value):
            self.read.problem(node.line, path, f"{value!r} is not a URL path starting with /")
            return None
        if is_builtin_path(value):
            self.read.problem(node.line, path, f"{value!r} is one of syncd's own paths")
            return None
        return value
