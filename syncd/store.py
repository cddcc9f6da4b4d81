"""Upserts of one entity's rows, inside the caller's transaction.

`INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE` through `execute_values`:

* the `WHERE` skips rows whose values did not change, so an unchanged row costs no
  write (no new tuple, no WAL, `n_tup_upd` stays put);
* with `version_column`, it also skips an incoming row older than the stored one
  (ties go to the newcomer, so a correction without a new timestamp still lands);
* `RETURNING` counts what was really inserted or changed.

A batch that PostgreSQL refuses for its data (SQLSTATE 22/23, a value the converter
let through but the column cannot hold) is retried row by row under savepoints, so
only the bad rows are rejected and the rest of the page lands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import execute_values

from syncd.config import Entity
from syncd.db import describe_db_error, is_data_error
from syncd.records import Reject, Row
from syncd.schema import entity_columns


@dataclass(frozen=True)
class Upserted:
    written: int  # rows inserted or changed
    rejects: list[Reject]  # rows PostgreSQL refused


class EntityStore:
    """The SQL for one entity's table, built once from its configuration."""

    def __init__(self, entity: Entity, schema: str) -> None:
        self.entity = entity
        columns = entity_columns(entity)
        names = [name for name, _ in columns]
        self.key_index = [names.index(key) for key in entity.primary_key]
        self.version_index = (
            names.index(entity.version_column) if entity.version_column is not None else None
        )
        self.statement = _upsert_statement(entity, schema, names)
        # Explicit casts: a NULL or a text literal takes the column's type, not "unknown".
        self.template = "(" + ", ".join(f"%s::{col_type}" for _, col_type in columns) + ")"

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.key_index)

    def dedupe(self, pairs: Sequence[tuple[Any, Row]]) -> list[tuple[Any, Row]]:
        """One row per key (ON CONFLICT cannot touch a row twice in one statement).

        The later record wins, unless its version is older than the earlier one's."""
        chosen: dict[tuple[Any, ...], tuple[Any, Row]] = {}
        version = self.version_index
        for pair in pairs:
            key = self.key_of(pair[1])
            held = chosen.get(key)
            if held is not None and version is not None and _older(pair[1], held[1], version):
                continue
            chosen[key] = pair
        return list(chosen.values())

    def upsert(self, cur: Cursor, pairs: Sequence[tuple[Any, Row]]) -> Upserted:
        """Upsert (record, row) pairs; `record` is kept only to reject it if need be."""
        unique = self.dedupe(pairs)
        if not unique:
            return Upserted(0, [])
        cur.execute("SAVEPOINT syncd_batch")
        try:
            written = self._execute(cur, [row for _, row in unique])
        except psycopg2.Error as exc:
            if not is_data_error(exc):
                raise  # the caller rolls back; on a dead connection a ROLLBACK would mask why
            cur.execute("ROLLBACK TO SAVEPOINT syncd_batch")
            return self._row_by_row(cur, unique)
        cur.execute("RELEASE SAVEPOINT syncd_batch")
        return Upserted(written, [])

    def _execute(self, cur: Cursor, rows: list[Row]) -> int:
        returned = execute_values(
            cur, self.statement, rows, template=self.template, page_size=len(rows), fetch=True
        )
        return len(returned)

    def _row_by_row(self, cur: Cursor, pairs: list[tuple[Any, Row]]) -> Upserted:
        written = 0
        rejects: list[Reject] = []
        for record, row in pairs:
            cur.execute("SAVEPOINT syncd_row")
            try:
                written += self._execute(cur, [row])
            except psycopg2.Error as exc:
                if not is_data_error(exc):
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT syncd_row")
                rejects.append(
                    Reject(record, f"PostgreSQL refused the row: {describe_db_error(exc)}")
                )
            else:
                cur.execute("RELEASE SAVEPOINT syncd_row")
        return Upserted(written, rejects)


def _older(candidate: Row, held: Row, version_index: int) -> bool:
    new, old = candidate[version_index], held[version_index]
    if new is None or old is None:
        return new is None and old is not None
    return bool(new < old)


def _upsert_statement(entity: Entity, schema: str, names: list[str]) -> sql.Composed:
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(entity.table))
    keys = sql.SQL(", ").join(map(sql.Identifier, entity.primary_key))
    others = [name for name in names if name not in entity.primary_key]
    insert = sql.SQL("INSERT INTO {} AS t ({}) VALUES %s ON CONFLICT ({}) ").format(
        table, sql.SQL(", ").join(map(sql.Identifier, names)), keys
    )
    if not others:
        # Nothing but the key: a row that exists is already identical.
        return insert + sql.SQL("DO NOTHING RETURNING 1")
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in others
    )
    stored = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(n)) for n in others)
    incoming = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(n)) for n in others)
    # ROW(...) IS DISTINCT FROM ROW(...) treats NULLs as values: NULL -> 'x' is a change.
    condition = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(stored, incoming)
    if entity.version_column is not None:
        version = sql.Identifier(entity.version_column)
        condition = condition + sql.SQL(" AND (t.{0} IS NULL OR EXCLUDED.{0} >= t.{0})").format(
            version
        )
    return insert + sql.SQL("DO UPDATE SET {} WHERE {} RETURNING 1").format(assignments, condition)
