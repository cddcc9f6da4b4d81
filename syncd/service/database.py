"""The service's own calls to PostgreSQL, outside sync runs and pushes.

One object so that the daemon can be driven without a database (tests pass a
stand-in). Each call opens its own connection and closes it: none is frequent, and
none may hold a connection the sync runs need. Every method raises psycopg2.Error
when the database cannot answer; the caller decides what that means.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg2
import structlog

from syncd.config.model import Config
from syncd.db.connection import connect, database_failure, describe_db_error, is_connection_error
from syncd.db.runlog import SyncLog
from syncd.db.schema import PendingMigration, migrate
from syncd.metrics import Metrics
from syncd.service.status import entity_status
from syncd.sync.preload import preload_status

log = structlog.get_logger("syncd.service.database")


class ServiceDatabase:
    def prepare(self, config: Config) -> None:
        """At start: migrate for `config`, close the ingest runs a dead process left
        open. Raises SyncdError when a table contradicts the configuration."""
        conn = connect(config.database)
        try:
            for change in migrate(conn, config):
                log.info("migrate.applied", change=change)
            stale = SyncLog(config.database.schema).close_dead_ingests(conn)
            if stale:
                log.warning("ingest.interrupted_runs_closed", count=stale)
        finally:
            conn.close()

    def migrate_for_reload(self, config: Config) -> PendingMigration | None:
        """Migrate for a reloaded file now, or, when the database cannot be reached,
        return a migration for the first run that reaches it: an outage is no reason
        to refuse a valid file. Any other database error is raised (the reload is
        refused)."""
        try:
            conn = connect(config.database)
            try:
                migrate(conn, config)
            finally:
                conn.close()
        except psycopg2.Error as exc:
            if not is_connection_error(exc):
                raise
            log.warning("reload.migration_deferred", error=describe_db_error(exc))
            return PendingMigration(config)
        return None

    def seed_metrics(self, config: Config, metrics: Metrics) -> dict[str, datetime]:
        """Set the gauges that describe the database's state, not this process's work
        (watermark, last success, preload progress). Returns when each entity last
        synced successfully: the scheduler's daily catch-up needs it too."""
        conn = connect(config.database)
        try:
            synclog = SyncLog(config.database.schema)
            for name, mark in synclog.watermarks(conn).items():
                if name in config.entities:
                    metrics.watermark.labels(entity=name).set(mark.timestamp())
            successes = synclog.last_successes(conn)
            for name, when in successes.items():
                if name in config.entities:
                    metrics.last_success.labels(entity=name).set(when.timestamp())
            with conn.cursor() as cur:
                for name, entity in config.entities.items():
                    ratio = preload_status(entity, *synclog.preload_state(cur, name))["ratio"]
                    metrics.preload_progress.labels(entity=name).set(ratio)
            conn.rollback()
        finally:
            conn.close()
        return successes

    def answers(self, config: Config) -> tuple[bool, str]:
        """/readyz: (True, "ready") if the database answers a query, else (False, why).
        Never raises."""
        try:
            conn = connect(config.database)
        except psycopg2.Error as exc:
            return False, database_failure(exc)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True, "ready"
        except psycopg2.Error as exc:
            return False, database_failure(exc)
        finally:
            conn.close()

    def entity_status(self, config: Config, now: datetime) -> list[dict[str, Any]]:
        """/status: the per-entity report `syncd status --json` prints."""
        conn = connect(config.database)
        try:
            return entity_status(conn, config, now)
        finally:
            conn.close()
