"""What `syncd status` and `GET /status` report per entity, read from the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg2 import sql

from syncd.config.model import Config, Schedule
from syncd.db.connection import Connection
from syncd.runs import RunKind, RunStatus
from syncd.service.triggers import IntervalTrigger, trigger_for
from syncd.sync.preload import preload_status
from syncd.sync.spans import iso as _iso

_QUERY = """
SELECT s.watermark, s.preload_end, s.preload_done_to, s.preload_from, {shared},
       last.status, last.kind, last.started_at, last.finished_at,
       last.rows_fetched, last.rows_written, last.rows_rejected, last.error,
       ok.finished_at
  FROM (SELECT %(entity)s AS entity) e
  LEFT JOIN {schema}.sync_state s ON s.entity = e.entity
  LEFT JOIN LATERAL (
        SELECT * FROM {schema}.sync_time t
         WHERE t.entity = e.entity AND t.kind = %(incremental)s
         ORDER BY t.started_at DESC, t.id DESC LIMIT 1) last ON true
  LEFT JOIN LATERAL (
        SELECT finished_at FROM {schema}.sync_time t
         WHERE t.entity = e.entity AND t.status = %(ok)s AND t.kind = %(incremental)s
         ORDER BY t.finished_at DESC LIMIT 1) ok ON true
"""


# The shared schedule's columns (db/schedule_state.py), NULL while a database migrated
# by an older syncd lacks them: status creates nothing.
_SHARED = "s.last_started_at, s.last_slot, s.last_host, s.last_pid"
_NO_SHARED = "NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::integer"
_FIELDS = 17

# The last run and the last success shown are incremental ones (a preload chunk or a
# push is not "the last sync").
INCREMENTAL, OK = RunKind.INCREMENTAL.value, RunStatus.OK.value


def entity_status(conn: Connection, config: Config, now: datetime) -> list[dict[str, Any]]:
    """One object per configured entity, in configuration order."""
    schema = config.database.schema
    report: list[dict[str, Any]] = []
    with conn.cursor() as cur:
        # A database syncd never touched has no tables yet: every entity is "never run".
        # Status reads only, so it creates nothing (it may run with a read-only role).
        cur.execute("SELECT to_regclass(%s)", (f'"{schema}".sync_time',))
        migrated = cur.fetchone() not in (None, (None,))
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'sync_state' AND column_name = 'last_started_at'",
            (schema,),
        )
        shared = _SHARED if cur.fetchone() is not None else _NO_SHARED
        query = sql.SQL(_QUERY).format(schema=sql.Identifier(schema), shared=sql.SQL(shared))
        for name in config.entities:
            row: tuple[Any, ...] | None = (None,) * _FIELDS
            if migrated:
                cur.execute(query, {"entity": name, "incremental": INCREMENTAL, "ok": OK})
                row = cur.fetchone()
            assert row is not None
            (
                watermark,
                preload_end,
                done_to,
                done_from,
                turn_started,
                turn_slot,
                turn_host,
                turn_pid,
                status,
                kind,
                started,
                finished,
                fetched,
                written,
                rejected,
                error,
                ok_at,
            ) = row
            report.append(
                {
                    "entity": name,
                    "watermark": _iso(watermark),
                    "lag_seconds": round((now - watermark).total_seconds(), 3)
                    if watermark is not None
                    else None,
                    "last_status": status,
                    "last_kind": kind,
                    "last_started_at": _iso(started),
                    "last_finished_at": _iso(finished),
                    "last_success_at": _iso(ok_at),
                    "last_rows_fetched": fetched,
                    "last_rows_written": written,
                    "last_rows_rejected": rejected,
                    "last_error": error,
                    "last_run_host": turn_host,
                    "last_run_pid": turn_pid,
                    "next_due_at": _iso(
                        next_due(config.entities[name].schedule, turn_started, turn_slot, now)
                    ),
                    "preload": preload_status(
                        config.entities[name], preload_end, done_to, done_from
                    ),
                }
            )
    conn.rollback()
    return report


def next_due(
    schedule: Schedule, last_started: datetime | None, last_slot: datetime | None, now: datetime
) -> datetime:
    """When the entity's next scheduled run is due, by the schedule every instance
    shares (now, if it is due already or never ran)."""
    trigger = trigger_for(schedule)
    if isinstance(trigger, IntervalTrigger):
        due = now if last_started is None else last_started + timedelta(seconds=trigger.seconds)
        return max(due, now)
    latest = trigger.previous_at_or_before(now)
    if latest is not None and (last_slot is None or last_slot < latest):
        return now  # the latest slot is not served yet: caught up at once
    return trigger.next_after(now)


def format_table(report: list[dict[str, Any]]) -> str:
    """The report as aligned text for a terminal."""
    headers = (
        "ENTITY",
        "WATERMARK",
        "LAG",
        "LAST RUN",
        "FINISHED",
        "BY",
        "NEXT DUE",
        "ROWS",
        "PRELOAD",
        "ERROR",
    )
    lines = [headers]
    for item in report:
        lag = item["lag_seconds"]
        rows = (
            f"{item['last_rows_fetched']}/{item['last_rows_written']}/{item['last_rows_rejected']}"
            if item["last_status"] is not None
            else "-"
        )
        lines.append(
            (
                item["entity"],
                item["watermark"] or "-",
                _human_seconds(lag) if lag is not None else "-",
                item["last_status"] or "never",
                item["last_finished_at"] or "-",
                f"{item['last_run_host']}:{item['last_run_pid']}" if item["last_run_host"] else "-",
                item["next_due_at"] or "-",
                rows,
                _preload_cell(item["preload"]),
                item["last_error"] or "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    out.append("(ROWS: fetched/written/rejected in the last run)")
    return "\n".join(out)


def _preload_cell(preload: dict[str, Any]) -> str:
    if not preload["enabled"]:
        return "-"
    return f"{preload['chunks_done']}/{preload['chunks_total']} chunks"


def _human_seconds(seconds: float) -> str:
    if seconds < 0:
        return f"-{_human_seconds(-seconds)}"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
