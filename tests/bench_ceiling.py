"""The database side of the benchmark (used by tests/bench.py): how fast can PostgreSQL
itself upsert the rows syncd produces, and would a COPY path beat `execute_values`?

* `measure_ceiling` -- the rows already converted and formatted as COPY text (none of
  that timed), then, timed, in ONE transaction: `COPY` into a TEMP staging table and
  `INSERT INTO t SELECT ... FROM staging ON CONFLICT (pk) DO UPDATE ... WHERE ...` into
  a fresh empty table shaped like the entity's. No Python work per row is timed, so
  this is the database's own upsert speed on this machine: the ceiling for syncd.
* `compare_batch_sizes` -- syncd's real writer (`EntityStore.upsert`, execute_values)
  against `CopyUpsert` (the same interface and semantics over COPY into a staging
  table) at several batch sizes, one commit per batch as syncd commits one per page.
  Here the Python formatting *is* timed: it is part of either path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection
from psycopg2.extensions import cursor as Cursor

from syncd.config import Entity
from syncd.records import Reject, Row
from syncd.schema import entity_columns
from syncd.store import EntityStore, Upserted

# --- timing the database side ------------------------------------------------------------


class TimedCursor(psycopg2.extensions.cursor):
    """Adds the wall time of every statement and COPY (the round trip to PostgreSQL and
    its work) to its connection's `server_seconds`, when that is a TimedConnection."""

    def execute(self, query: Any, vars: Any = None) -> None:
        started = time.perf_counter()
        try:
            super().execute(query, vars)
        finally:
            _charge(self.connection, "server_seconds", started)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        started = time.perf_counter()
        try:
            super().copy_expert(sql, file, size)
        finally:
            _charge(self.connection, "server_seconds", started)


class TimedConnection(psycopg2.extensions.connection):
    """A connection that counts seconds spent in statements and commits, and reads its
    backend's CPU time just before it closes (the backend runs on this machine)."""

    server_seconds = 0.0
    commit_seconds = 0.0
    backend_cpu_seconds = 0.0

    def __init__(self, dsn: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(dsn, *args, **kwargs)
        self.cursor_factory = TimedCursor

    def commit(self) -> None:
        started = time.perf_counter()
        try:
            super().commit()
        finally:
            _charge(self, "commit_seconds", started)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, psycopg2.Error):
                self.backend_cpu_seconds = process_cpu_seconds(self.get_backend_pid())
        super().close()


def _charge(conn: Any, counter: str, started: float) -> None:
    if isinstance(conn, TimedConnection):
        setattr(conn, counter, getattr(conn, counter) + time.perf_counter() - started)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process on this machine, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_connect(dsn: str, application_name: str = "syncd-bench") -> TimedConnection:
    conn = psycopg2.connect(
        dsn, connection_factory=TimedConnection, application_name=application_name
    )
    assert isinstance(conn, TimedConnection)
    return conn


# --- COPY text format ------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
Formatter = Callable[[Any], str]


def _escaped(value: Any) -> str:
    return str(value).translate(_ESCAPES)


def _boolean(value: Any) -> str:
    return "t" if value else "f"


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _jsonb(value: Any) -> str:
    # RowBuilder hands jsonb values over as psycopg2 Json wrappers.
    return json.dumps(value.adapted, ensure_ascii=False).translate(_ESCAPES)


_FORMATTERS: dict[str, Formatter] = {
    "text": _escaped,
    "uuid": str,
    "integer": str,
    "bigint": str,
    "numeric": str,
    "double precision": repr,
    "boolean": _boolean,
    "date": _iso,
    "timestamp": _iso,
    "timestamptz": _iso,
    "jsonb": _jsonb,
}


class CopyFormatter:
    """Formats RowBuilder rows as COPY text, one formatter per column type."""

    def __init__(self, entity: Entity) -> None:
        self.formatters = [_FORMATTERS[col_type] for _, col_type in entity_columns(entity)]

    def line(self, row: Row) -> str:
        return (
            "\t".join(
                "\\N" if value is None else fmt(value)
                for fmt, value in zip(self.formatters, row, strict=True)
            )
            + "\n"
        )

    def text(self, rows: Sequence[Row]) -> bytes:
        return "".join(map(self.line, rows)).encode()


# --- SQL -------------------------------------------------------------------------------


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def create_table_like(conn: PgConnection, template: str, name: str) -> None:
    """A fresh empty table with `template`'s columns and primary key."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(name)))
        cur.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                _ident(name), _ident(template)
            )
        )
    conn.commit()


def drop_table(conn: PgConnection, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(name)))
    conn.commit()


def upsert_from(entity: Entity, table: str, staging: str) -> sql.Composed:
    """`INSERT ... SELECT ... ON CONFLICT` with syncd's own update rule (store.py):
    skip unchanged rows, never replace a row by an older version."""
    names = [name for name, _ in entity_columns(entity)]
    others = [name for name in names if name not in entity.primary_key]
    columns = sql.SQL(", ").join(map(_ident, names))
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(_ident(name)) for name in others
    )
    stored = sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(n)) for n in others)
    incoming = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(_ident(n)) for n in others)
    condition = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(stored, incoming)
    if entity.version_column is not None:
        condition += sql.SQL(" AND (t.{0} IS NULL OR EXCLUDED.{0} >= t.{0})").format(
            _ident(entity.version_column)
        )
    return sql.SQL(
        "INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {} WHERE {}"
    ).format(
        _ident(table),
        columns,
        columns,
        _ident(staging),
        sql.SQL(", ").join(map(_ident, entity.primary_key)),
        assignments,
        condition,
    )


# --- the ceiling -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ceiling:
    rows: int
    copy_seconds: float
    upsert_seconds: float
    total_seconds: float  # the transaction, commit included

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.total_seconds


def measure_ceiling(conn: PgConnection, entity: Entity, copy_text: bytes, rows: int) -> Ceiling:
    """COPY + INSERT ... SELECT ... ON CONFLICT of pre-formatted rows, in one transaction,
    into a fresh table shaped like the entity's."""
    target = f"ceiling_{entity.table}"
    create_table_like(conn, entity.table, target)
    upsert = upsert_from(entity, target, "ceiling_staging")
    try:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE ceiling_staging (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
                ).format(_ident(target))
            )
            cur.copy_expert("COPY ceiling_staging FROM STDIN", io.BytesIO(copy_text), 1 << 20)
            copied = time.perf_counter()
            cur.execute(upsert)
            written = cur.rowcount
            upserted = time.perf_counter()
        conn.commit()
        finished = time.perf_counter()
    finally:
        drop_table(conn, target)
    if written != rows:
        raise RuntimeError(f"the ceiling upsert wrote {written} rows, expected {rows}")
    return Ceiling(rows, copied - started, upserted - copied, finished - started)


# --- execute_values against COPY, batch by batch -----------------------------------------


class CopyUpsert:
    """`EntityStore.upsert` over COPY: same arguments, same result, same update rule.

    Per batch: dedupe (as EntityStore does), COPY into a session-local staging table
    emptied at each commit, then one INSERT ... SELECT ... ON CONFLICT. Rejecting bad
    rows one by one is left out: a data error here would fail the batch."""

    STAGING = "syncd_staging"

    def __init__(self, entity: Entity, table: str) -> None:
        self.store = EntityStore(entity, "public")
        self.entity = entity
        self.formatter = CopyFormatter(entity)
        self.statement = upsert_from(entity, table, self.STAGING)
        self.table = table
        self._created = False

    def upsert(self, cur: Cursor, pairs: Sequence[tuple[Any, Row]]) -> Upserted:
        unique = self.store.dedupe(pairs)
        if not unique:
            return Upserted(0, [])
        if not self._created:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS"
                ).format(_ident(self.STAGING), _ident(self.table))
            )
            self._created = True
        text = self.formatter.text([row for _, row in unique])
        cur.copy_expert(f"COPY {self.STAGING} FROM STDIN", io.BytesIO(text), 1 << 20)
        cur.execute(self.statement)
        return Upserted(cur.rowcount, list[Reject]())


@dataclass(frozen=True)
class Comparison:
    method: str
    batch_size: int
    rows: int
    seconds: float
    server_seconds: float  # in statements, COPY and commits: PostgreSQL and the round trips
    backend_cpu_seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


Upsert = Callable[[Cursor, Sequence[tuple[Any, Row]]], Upserted]


def _batches(rows: Sequence[Row], size: int) -> Iterator[list[tuple[Any, Row]]]:
    for start in range(0, len(rows), size):
        yield [(None, row) for row in rows[start : start + size]]


def _time_writer(conn: TimedConnection, upsert: Upsert, rows: Sequence[Row], size: int) -> float:
    """Seconds to upsert every row, one transaction (and commit) per batch."""
    written = 0
    started = time.perf_counter()
    with conn.cursor() as cur:
        for batch in _batches(rows, size):
            written += upsert(cur, batch).written
            conn.commit()
    seconds = time.perf_counter() - started
    if written != len(rows):
        raise RuntimeError(f"wrote {written} rows, expected {len(rows)}")
    return seconds


def compare_batch_sizes(
    dsn: str, entity: Entity, rows: Sequence[Row], sizes: Sequence[int]
) -> list[Comparison]:
    """execute_values (syncd's EntityStore) against CopyUpsert, each batch size, each
    into a fresh empty table, on its own connection."""
    target = f"compare_{entity.table}"
    results = []
    for size in sizes:
        for method in ("execute_values", "COPY"):
            conn = timed_connect(dsn)
            try:
                create_table_like(conn, entity.table, target)
                upsert: Upsert = (
                    EntityStore(dataclasses.replace(entity, table=target), "public").upsert
                    if method == "execute_values"
                    else CopyUpsert(entity, target).upsert
                )
                conn.server_seconds = conn.commit_seconds = 0.0
                cpu_before = process_cpu_seconds(conn.get_backend_pid())
                seconds = _time_writer(conn, upsert, rows, size)
                server = conn.server_seconds + conn.commit_seconds
                drop_table(conn, target)
            finally:
                conn.close()
            cpu = conn.backend_cpu_seconds - cpu_before
            results.append(Comparison(method, size, len(rows), seconds, server, cpu))
    return results
