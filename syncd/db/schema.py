"""Creates what is missing in the database: syncd's own tables and each entity's table.

Never drops or converts data. A column added to the YAML is added to its table; a
column whose type in the table differs from the YAML is reported, not altered
(converting data is the operator's decision). Two instances starting at once
serialise on a transaction-level advisory lock.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import structlog
from psycopg2 import sql

from syncd.columns.types import column_type
from syncd.config.model import RAW_COLUMN, RAW_COLUMN_TYPE, Config, Entity
from syncd.db import schedule_state
from syncd.db.connection import Connection
from syncd.errors import SyncdError
from syncd.runs import RunKind, RunStatus, sql_values

log = structlog.get_logger("syncd.db.schema")

MIGRATION_LOCK = "syncd:migrate"

# {kinds} and {statuses} are filled from syncd.runs when this module loads; {schema}
# is an identifier composed per call.
OWN_TABLES = """
CREATE TABLE IF NOT EXISTS {schema}.sync_time (
    id            bigserial PRIMARY KEY,
    entity        text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ({kinds})),
    window_from   timestamptz,
    window_to     timestamptz,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text        NOT NULL CHECK (status IN ({statuses})),
    rows_fetched  bigint      NOT NULL DEFAULT 0,
    rows_written  bigint      NOT NULL DEFAULT 0,
    rows_rejected bigint      NOT NULL DEFAULT 0,
    error         text,
    host          text,
    pid           integer
);
CREATE INDEX IF NOT EXISTS sync_time_entity_started
    ON {schema}.sync_time (entity, started_at DESC);

CREATE TABLE IF NOT EXISTS {schema}.sync_state (
    entity      text PRIMARY KEY,
    watermark   timestamptz,
    preload_end timestamptz,
    preload_done_to timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);


CREATE TABLE IF NOT EXISTS {schema}.sync_rejects (
    id          bigserial PRIMARY KEY,
    entity      text        NOT NULL,
    run_id      bigint REFERENCES {schema}.sync_time (id) ON DELETE SET NULL,
    record      jsonb,
    reason      text        NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sync_rejects_entity_rejected
    ON {schema}.sync_rejects (entity, rejected_at DESC);
"""
OWN_TABLES = OWN_TABLES.replace("{kinds}", sql_values(RunKind)).replace(
    "{statuses}", sql_values(RunStatus)
)


# Columns added to syncd's own tables after their first release: added to databases
# created before, and only when missing (ALTER TABLE takes an exclusive lock even
# when IF NOT EXISTS then does nothing).
OWN_COLUMNS_ADDED = (
    ("sync_state", "preload_done_to", "timestamptz"),
    ("sync_state", "preload_from", "timestamptz"),
    *(("sync_state", column, col_type) for column, col_type in schedule_state.COLUMNS),
)


def _add_missing_own_columns(conn: Connection, schema: str) -> None:
    for table, column, col_type in OWN_COLUMNS_ADDED:
        if column in _existing_columns(conn, schema, table):
            continue
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}").format(
                    sql.Identifier(schema),
                    sql.Identifier(table),
                    sql.Identifier(column),
                    sql.SQL(col_type),
                )
            )


def entity_columns(entity: Entity) -> list[tuple[str, str]]:
    """(name, type) of every column of the entity's table, in row order; each type is
    a name in `syncd.columns.types`."""
    columns = [(col.name, col.type) for col in entity.columns]
    if entity.keep_raw:
        columns.append((RAW_COLUMN, RAW_COLUMN_TYPE))
    return columns


def _create_table(schema: str, entity: Entity) -> sql.Composed:
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(column_type(col_type).sql))
        for name, col_type in entity_columns(entity)
    ]
    definitions.append(
        sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, entity.primary_key))
        )
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({})").format(
        sql.Identifier(schema), sql.Identifier(entity.table), sql.SQL(", ").join(definitions)
    )


def _existing_columns(conn: Connection, schema: str, table: str) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
              FROM pg_attribute a
              JOIN pg_class c ON c.oid = a.attrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
            """,
            (schema, table),
        )
        return {name: col_type for name, col_type in cur.fetchall()}


def _migrate_entity(conn: Connection, schema: str, entity: Entity) -> list[str]:
    changes: list[str] = []
    existing = _existing_columns(conn, schema, entity.table)
    with conn.cursor() as cur:
        if not existing:
            cur.execute(_create_table(schema, entity))
            return [f"created table {schema}.{entity.table}"]
        for name, col_type in entity_columns(entity):
            have = existing.get(name)
            if have is None:
                cur.execute(
                    sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}").format(
                        sql.Identifier(schema),
                        sql.Identifier(entity.table),
                        sql.Identifier(name),
                        sql.SQL(column_type(col_type).sql),
                    )
                )
                changes.append(f"added column {entity.table}.{name} {col_type}")
            elif have != column_type(col_type).canonical:  # as format_type() spells it
                raise SyncdError(
                    f"entities.{entity.name}.columns.{name}.type: the table "
                    f"{schema}.{entity.table} has {name} as {have} but the configuration says "
                    f"{col_type}; syncd never converts data: ALTER the column by hand or "
                    "change the configuration"
                )
    return changes


def migrate(conn: Connection, config: Config) -> list[str]:
    """Bring the database up to the configuration; returns what was changed.

    One transaction: either every change lands or none does."""
    schema = config.database.schema
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (MIGRATION_LOCK,))
            # Only when missing: CREATE SCHEMA needs a privilege that a role syncing
            # into an existing schema need not have, even with IF NOT EXISTS.
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            # Bounded waits: a migration (at start, or a reload on the main loop) must
            # not hang behind a long transaction; it fails and is tried again.
            cur.execute("SET LOCAL lock_timeout = '10s'")
            cur.execute(sql.SQL(OWN_TABLES).format(schema=sql.Identifier(schema)))
            _add_missing_own_columns(conn, schema)
        changes: list[str] = []
        for entity in config.entities.values():
            changes.extend(_migrate_entity(conn, schema, entity))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return changes


class PendingMigration:
    """A migration a reload could not run because the database was not there.

    The reloaded configuration is applied anyway (only the file's own problems refuse
    a reload); each entity's first run or push that reaches the database migrates
    syncd's tables and that entity's table before it touches them, so a column the
    new file adds exists before anything writes it. Entity by entity: a table that
    contradicts the file fails that entity's runs, with the reason, not every one's."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._done: set[str] = set()

    def ensure(self, conn: Connection, entity: str) -> None:
        """Migrate for `entity` on `conn` unless done already, logging each change.
        SyncdError if its table contradicts the configuration."""
        if entity in self._done:
            return
        with self._lock:
            if entity in self._done:
                return
            only = replace(self._config, entities={entity: self._config.entities[entity]})
            for change in migrate(conn, only):
                log.info("migrate.applied", change=change, entity=entity)
            self._done.add(entity)
