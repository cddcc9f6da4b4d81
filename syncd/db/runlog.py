"""syncd's own tables: the run log (`sync_time`), watermarks and preload progress
(`sync_state`), and rejects (`sync_rejects`). The advisory locks are in locks.py.

Functions that take a cursor work inside the caller's transaction (a watermark must
commit together with its data); functions that take a connection commit themselves.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json, execute_values

from syncd.db.connection import Connection
from syncd.db.rows import Reject
from syncd.db.storable import storable_error, storable_json, storable_text
from syncd.runs import RunKind, RunStatus

INTERRUPTED = "interrupted: the syncd process running this stopped before it finished"


def final_status(error: str | None) -> RunStatus:
    """How a run with `error` (None: none) ends."""
    return RunStatus.FAILED if error else RunStatus.OK


class SyncLog:
    """SQL on syncd's tables in one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = sql.Identifier(schema)

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=self.schema)

    def _end_runs(self, cur: Cursor, error: str | None, where: str, params: tuple[Any, ...]) -> int:
        """End the `sync_time` rows `where` selects: `ok` without `error`, else `failed`
        with it, finished now. Returns how many rows that was. `where` is always a
        constant of this class (values go in `params`), never input."""
        cur.execute(
            self._sql(
                "UPDATE {schema}.sync_time SET status = %s, finished_at = now(), error = %s "
                f"WHERE {where}"
            ),
            (final_status(error), storable_error(error), *params),
        )
        return int(cur.rowcount)

    # -- sync_time ----------------------------------------------------------------

    def close_interrupted(
        self,
        conn: Connection,
        entity: str,
        kind: RunKind,
        known: Mapping[int, str | None] | None = None,
    ) -> int:
        """Mark `running` rows of `entity` and `kind` failed. Call only while holding
        the lock of that kind of run: then no live process can be running them.
        `known` gives the real end of some of them (run id -> error, None for ok),
        which this process could not record when they ended. Returns how many rows
        were marked interrupted."""
        with conn.cursor() as cur:
            for run_id, error in (known or {}).items():
                self._end_runs(cur, error, "id = %s AND status = %s", (run_id, RunStatus.RUNNING))
            count = self._end_runs(
                cur,
                INTERRUPTED,
                "entity = %s AND status = %s AND kind = %s",
                (entity, RunStatus.RUNNING, kind),
            )
        conn.commit()
        return count

    def close_dead_ingests(self, conn: Connection) -> int:
        """Mark failed the `running` ingest rows of processes on this host that are
        gone (a push has no lock to tell; its process id does). At daemon start."""
        with conn.cursor() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, pid FROM {schema}.sync_time "
                    "WHERE kind = %s AND status = %s AND host = %s"
                ),
                (RunKind.INGEST, RunStatus.RUNNING, socket.gethostname()),
            )
            dead = [run_id for run_id, pid in cur.fetchall() if not process_alive(pid)]
            if dead:
                self._end_runs(cur, INTERRUPTED, "id = ANY(%s)", (dead,))
        conn.commit()
        return len(dead)

    def start_run(
        self,
        conn: Connection,
        entity: str,
        kind: RunKind,
        window_from: datetime | None,
        window_to: datetime | None,
    ) -> int:
        with conn.cursor() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO {schema}.sync_time "
                    "(entity, kind, window_from, window_to, status, host, pid) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"
                ),
                (
                    entity,
                    kind,
                    window_from,
                    window_to,
                    RunStatus.RUNNING,
                    socket.gethostname(),
                    os.getpid(),
                ),
            )
            row = cur.fetchone()
        conn.commit()
        assert row is not None
        return int(row[0])

    def add_counts(
        self, cur: Cursor, run_id: int, fetched: int, written: int, rejected: int
    ) -> None:
        cur.execute(
            self._sql(
                "UPDATE {schema}.sync_time SET rows_fetched = rows_fetched + %s, "
                "rows_written = rows_written + %s, rows_rejected = rows_rejected + %s "
                "WHERE id = %s"
            ),
            (fetched, written, rejected, run_id),
        )

    def mark_ok(self, cur: Cursor, run_id: int) -> None:
        """The run is done, inside the transaction that commits its last data."""
        self._end_runs(cur, None, "id = %s", (run_id,))

    def finish_run(self, conn: Connection, run_id: int, error: str | None) -> None:
        """Record the run's end (`error` None: it succeeded); commits."""
        with conn.cursor() as cur:
            self._end_runs(cur, error, "id = %s", (run_id,))
        conn.commit()

    # -- sync_state ---------------------------------------------------------------

    def watermark(self, cur: Cursor, entity: str) -> datetime | None:
        cur.execute(
            self._sql("SELECT watermark FROM {schema}.sync_state WHERE entity = %s"), (entity,)
        )
        row = cur.fetchone()
        return row[0] if row else None

    def set_watermark(self, cur: Cursor, entity: str, watermark: datetime) -> None:
        """Move the watermark forward to `watermark`, never back: with `window.max`
        shorter than `lookback`, the first piece of a run ends before the stored
        watermark, and everything up to that watermark is committed already."""
        cur.execute(
            self._sql(
                "INSERT INTO {schema}.sync_state (entity, watermark, updated_at) "
                "VALUES (%s, %s, now()) ON CONFLICT (entity) DO UPDATE "
                "SET watermark = GREATEST({schema}.sync_state.watermark, EXCLUDED.watermark), "
                "updated_at = now()"
            ),
            (entity, watermark),
        )

    def rewind_watermark(self, cur: Cursor, entity: str, watermark: datetime) -> None:
        """Set the watermark, backwards too: only `syncd rewind`, under the entity's
        lock (set_watermark never moves it back)."""
        cur.execute(
            self._sql(
                "UPDATE {schema}.sync_state SET watermark = %s, updated_at = now() "
                "WHERE entity = %s"
            ),
            (watermark, entity),
        )

    def pin_preload_end(
        self, cur: Cursor, entity: str, now: datetime, started_at: datetime | None = None
    ) -> datetime:
        """The end E of the entity's preload range, pinned the first time it is asked
        for and never moved (docs/operations.md, "Preload (history backfill)"); returns E.

        An entity with no state yet gets E = `now` (formatted like a toTime), and its
        incremental sync starts there too. One that synced before its preload was
        enabled keeps its watermark; its E is where incremental sync began:
        `started_at` (its `window.initial_from`), else its watermark."""
        cur.execute(
            self._sql(
                "INSERT INTO {schema}.sync_state (entity, watermark, preload_end) "
                "VALUES (%s, %s, %s) ON CONFLICT (entity) DO UPDATE "
                "SET preload_end = COALESCE({schema}.sync_state.preload_end, %s, "
                "{schema}.sync_state.watermark, EXCLUDED.preload_end) "
                "RETURNING preload_end"
            ),
            (entity, now, now, started_at),
        )
        row = cur.fetchone()
        assert row is not None
        end: datetime = row[0]
        return end

    def preload_state(
        self, cur: Cursor, entity: str
    ) -> tuple[datetime | None, datetime | None, datetime | None]:
        """(E, done_to, done_from): the preload's end, how far it has committed, and
        the start that progress belongs to."""
        cur.execute(
            self._sql(
                "SELECT preload_end, preload_done_to, preload_from FROM {schema}.sync_state "
                "WHERE entity = %s"
            ),
            (entity,),
        )
        row = cur.fetchone()
        return (row[0], row[1], row[2]) if row else (None, None, None)

    def begin_preload(self, cur: Cursor, entity: str, start: datetime) -> datetime | None:
        """Record the start the preload's progress belongs to; returns how far it has
        committed. A start moved earlier than the one the progress was made from
        restarts the progress: the range before it was never read."""
        _, done_to, done_from = self.preload_state(cur, entity)
        if done_from is not None and start < done_from:
            done_to = None
        cur.execute(
            self._sql(
                "UPDATE {schema}.sync_state SET preload_from = %s, preload_done_to = %s "
                "WHERE entity = %s"
            ),
            (start, done_to, entity),
        )
        return done_to

    def set_preload_done_to(self, cur: Cursor, entity: str, done_to: datetime) -> None:
        cur.execute(
            self._sql(
                "UPDATE {schema}.sync_state SET preload_done_to = %s, updated_at = now() "
                "WHERE entity = %s"
            ),
            (done_to, entity),
        )

    def watermarks(self, conn: Connection) -> dict[str, datetime]:
        """Every entity's committed watermark (for the metrics at start)."""
        with conn.cursor() as cur:
            cur.execute(
                self._sql(
                    "SELECT entity, watermark FROM {schema}.sync_state WHERE watermark IS NOT NULL"
                )
            )
            rows = dict(cur.fetchall())
        conn.rollback()
        return rows

    def last_successes(
        self, conn: Connection, kind: RunKind = RunKind.INCREMENTAL
    ) -> dict[str, datetime]:
        """When each entity's last successful run of `kind` finished."""
        with conn.cursor() as cur:
            cur.execute(
                self._sql(
                    "SELECT entity, max(finished_at) FROM {schema}.sync_time "
                    "WHERE status = %s AND kind = %s GROUP BY entity"
                ),
                (RunStatus.OK, kind),
            )
            rows = dict(cur.fetchall())
        conn.rollback()
        return rows

    # -- sync_rejects -------------------------------------------------------------

    def add_rejects(
        self, cur: Cursor, entity: str, run_id: int | None, rejects: Iterable[Reject]
    ) -> None:
        # As received, as far as PostgreSQL can hold it: a reject must never fail its page.
        rows = [
            (entity, run_id, Json(storable_json(r.record)), storable_text(r.reason))
            for r in rejects
        ]
        if rows:
            execute_values(
                cur,
                self._sql(
                    "INSERT INTO {schema}.sync_rejects (entity, run_id, record, reason) VALUES %s"
                ),
                rows,
            )


def process_alive(pid: int | None) -> bool:
    """Whether process `pid` of this host still exists."""
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
