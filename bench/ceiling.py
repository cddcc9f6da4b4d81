"""The database side of the benchmark (used by bench/endtoend.py): how fast can PostgreSQL
itself upsert the rows syncd produces, and how do syncd's two write paths compare?

* `measure_ceiling` -- the rows already converted and formatted as COPY text (none of
  that timed), then, timed, in ONE transaction: `COPY` into a TEMP staging table and
  `INSERT INTO t SELECT ... FROM staging ON CONFLICT (pk) DO UPDATE ... WHERE ...` into
  a fresh empty table shaped like the entity's. No Python work per row is timed, so
  this is the database's own upsert speed on this machine: the ceiling for syncd.
* `compare_batch_sizes` -- syncd's own writer, `EntityStore.upsert`, on each of its
  two paths (`syncd.db.store.COPY_MIN_ROWS` forced so that every batch takes the one
  measured): execute_values, and COPY into a staging table + INSERT ... SELECT. Several
  batch sizes, one commit per batch as syncd commits one per page. Here the Python
  formatting *is* timed: it is part of either path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

import syncd.db.store
from syncd.config.model import Entity
from syncd.db.rows import Row
from syncd.db.schema import entity_columns
from syncd.db.store import EntityStore

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
            if isinstance(self.connection, TimedConnection):
                self.connection.copies += 1


class TimedConnection(psycopg2.extensions.connection):
    """A connection that counts seconds spent in statements and commits, and reads its
    backend's CPU time just before it closes (the backend runs on this machine)."""

    server_seconds = 0.0
    commit_seconds = 0.0
    copies = 0  # COPY commands run
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


def measure_ceiling(
    conn: PgConnection, entity: Entity, copy_text: bytes, rows: int, attempts: int = 3
) -> Ceiling:
    """The fastest of `attempts` tries: it is a ceiling, and a one-second measurement
    on a shared machine is easily slowed down (autovacuum, a checkpoint, a neighbour)."""
    tries = [_ceiling_once(conn, entity, copy_text, rows) for _ in range(attempts)]
    return min(tries, key=lambda ceiling: ceiling.total_seconds)


def _ceiling_once(conn: PgConnection, entity: Entity, copy_text: bytes, rows: int) -> Ceiling:
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


# --- syncd's two write paths, batch by batch ---------------------------------------------

METHODS = ("execute_values", "COPY")
# syncd.db.store.COPY_MIN_ROWS for each method: no batch reaches it, or every batch does.
_COPY_MIN_ROWS = {"execute_values": sys.maxsize, "COPY": 1}


@contextlib.contextmanager
def copy_min_rows(value: int) -> Iterator[None]:
    """`syncd.db.store.COPY_MIN_ROWS` set to `value` for the block, then restored.

    EntityStore.upsert reads it at every call, so this picks its path for any size."""
    saved = syncd.db.store.COPY_MIN_ROWS
    syncd.db.store.COPY_MIN_ROWS = value
    try:
        yield
    finally:
        syncd.db.store.COPY_MIN_ROWS = saved


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


def _batches(rows: Sequence[Row], size: int) -> Iterator[list[tuple[Any, Row]]]:
    for start in range(0, len(rows), size):
        yield [(None, row) for row in rows[start : start + size]]


def _time_writer(
    conn: TimedConnection, store: EntityStore, method: str, rows: Sequence[Row], size: int
) -> float:
    """Seconds to upsert every row through `method`, one transaction (and commit) per
    batch. Fails unless every row was written and every batch took that path."""
    batches = list(_batches(rows, size))  # not timed
    written = 0
    with copy_min_rows(_COPY_MIN_ROWS[method]), conn.cursor() as cur:
        started = time.perf_counter()
        for batch in batches:
            written += store.upsert(cur, batch).written
            conn.commit()
        seconds = time.perf_counter() - started
    if written != len(rows):
        raise RuntimeError(f"{method}: wrote {written} rows, expected {len(rows)}")
    expected_copies = len(batches) if method == "COPY" else 0
    if conn.copies != expected_copies:
        raise RuntimeError(f"{method}: {conn.copies} COPY commands for {len(batches)} batches")
    return seconds


def compare_batch_sizes(
    dsn: str, entity: Entity, rows: Sequence[Row], sizes: Sequence[int]
) -> list[Comparison]:
    """EntityStore.upsert on each of its paths, at each batch size, each into a fresh
    empty table on its own connection."""
    target = f"compare_{entity.table}"
    results = []
    for size in sizes:
        for method in METHODS:
            conn = timed_connect(dsn)
            try:
                create_table_like(conn, entity.table, target)
                store = EntityStore(dataclasses.replace(entity, table=target), "public")
                conn.server_seconds = conn.commit_seconds = 0.0
                cpu_before = process_cpu_seconds(conn.get_backend_pid())
                seconds = _time_writer(conn, store, method, rows, size)
                server = conn.server_seconds + conn.commit_seconds
                drop_table(conn, target)
            finally:
                conn.close()
            cpu = conn.backend_cpu_seconds - cpu_before
            results.append(Comparison(method, size, len(rows), seconds, server, cpu))
    return results
