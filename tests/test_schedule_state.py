"""The schedule several instances share (db/schedule_state.py): the rule on the
database's times, the claim on a real PostgreSQL, and two engines on one database
whose hosts' clocks disagree by 1.5 s."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from devtools.demo_source import DemoSource
from syncd.config.model import Schedule
from syncd.db.schedule_state import MANUAL, Due, claim, decide
from syncd.db.schema import migrate
from syncd.runs import SkipReason
from syncd.service.status import entity_status, next_due
from syncd.sync.results import RunOutcome
from tests.support import connection, demo_setup, make_engine, query

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MINUTE = Due(interval=60.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- the rule -------------------------------------------------------------------------


def test_an_interval_is_served_once_from_the_last_start_by_any_instance() -> None:
    assert decide(MINUTE, None, None, at(0)).granted  # never ran
    served = decide(MINUTE, at(0), None, at(20))
    assert (served.granted, served.next_in) == (False, 40.0)
    assert decide(MINUTE, at(0), None, at(60)).granted
    # An instance plans from its own clock, a little before the database records the
    # start: a tenth of the interval (at most 1 s) of slack.
    assert decide(MINUTE, at(0), None, at(59.2)).granted
    assert not decide(MINUTE, at(0), None, at(58.9)).granted
    assert decide(Due(interval=2.0), at(0), None, at(1.85)).granted
    assert not decide(Due(interval=2.0), at(0), None, at(1.75)).granted


def test_an_at_slot_is_served_once_whatever_the_times() -> None:
    noon = Due(slot=at(0))
    assert decide(noon, None, None, at(1)).granted
    assert not decide(noon, at(0.5), at(0), at(1)).granted  # served
    assert not decide(noon, at(0.5), at(3600), at(7200)).granted  # a later slot was served
    assert decide(Due(slot=at(3600)), at(0.5), at(0), at(3601)).granted


def test_a_manual_run_always_runs() -> None:
    assert decide(MANUAL, at(0), at(0), at(1)).granted


# --- the claim, on PostgreSQL ------------------------------------------------------------


@pytest.fixture
def state(pg_dsn: str, pg_conn: Any) -> Any:
    with pg_conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE sync_state (entity text PRIMARY KEY, watermark timestamptz,"
            " last_started_at timestamptz, last_slot timestamptz, last_host text,"
            " last_pid integer)"
        )
    pg_conn.commit()
    return pg_conn


def test_a_claim_records_the_start_on_the_database_clock_and_who_made_it(state: Any) -> None:
    assert claim(state, "public", "task", MINUTE).granted
    [(started, host, pid, db_now)] = query_rows(state)
    assert (host, pid) == (socket.gethostname(), os.getpid())
    assert abs((db_now - started).total_seconds()) < 5
    second = claim(state, "public", "task", MINUTE)
    assert not second.granted
    assert second.next_in is not None and 55 < second.next_in <= 60
    assert claim(state, "public", "task", MANUAL).granted  # and restarts the interval
    assert not claim(state, "public", "task", MINUTE).granted


def test_each_at_slot_is_claimed_once(state: Any) -> None:
    noon, evening = Due(slot=at(0)), Due(slot=at(6 * 3600))
    assert claim(state, "public", "user", noon).granted
    assert not claim(state, "public", "user", noon).granted
    assert claim(state, "public", "user", evening).granted
    assert not claim(state, "public", "user", noon).granted  # never back to an older slot


def query_rows(conn: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute("SELECT last_started_at, last_host, last_pid, now() FROM sync_state")
        rows: list[tuple[Any, ...]] = cur.fetchall()
    conn.commit()
    return rows


# --- two engines, clocks 1.5 s apart -------------------------------------------------------


def test_two_engines_whose_clocks_disagree_serve_each_turn_once(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The decision reads the database's now(), never a host's: an instance whose
    clock runs 1.5 s ahead neither runs a served interval again nor misses one."""
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"])
    with connection(pg_dsn) as conn:
        migrate(conn, config)
    honest = make_engine(config, now=lambda: datetime.now(UTC))
    ahead = make_engine(config, now=lambda: datetime.now(UTC) + timedelta(seconds=1.5))
    assert honest.sync_entity("task", MINUTE).outcome == RunOutcome.OK
    second = ahead.sync_entity("task", MINUTE)
    assert (second.outcome, second.skip_reason) == (RunOutcome.SKIPPED, SkipReason.SERVED)
    assert second.next_in is not None and 50 < second.next_in <= 60
    noon = Due(slot=datetime.now(UTC).replace(microsecond=0))
    assert ahead.sync_entity("task", noon).outcome == RunOutcome.OK
    assert honest.sync_entity("task", noon).skip_reason == SkipReason.SERVED
    [(runs,)] = query(pg_dsn, "SELECT count(*) FROM sync_time WHERE entity = 'task'")
    assert runs == 2  # a skipped turn leaves no sync_time row


# --- what status shows --------------------------------------------------------------------


def test_next_due_follows_the_shared_schedule() -> None:
    every = Schedule(every=timedelta(minutes=1))
    assert next_due(every, None, None, at(5)) == at(5)  # never ran: due now
    assert next_due(every, at(0), None, at(5)) == at(60)
    assert next_due(every, at(0), None, at(90)) == at(90)  # overdue: now
    daily = Schedule(at=(time(12, 0), time(18, 0)), timezone=ZoneInfo("UTC"))
    assert next_due(daily, None, at(0), at(60)) == at(6 * 3600)  # noon served
    assert next_due(daily, None, at(-86400), at(60)) == at(60)  # noon missed: now


def test_status_says_who_ran_each_entity_last_and_when_it_is_next_due(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task", "user"])
    with connection(pg_dsn) as conn:
        migrate(conn, config)
    assert make_engine(config).sync_entity("task", MINUTE).outcome == RunOutcome.OK
    with connection(pg_dsn) as conn:
        [task, user] = entity_status(conn, config, datetime.now(UTC))
    assert (task["last_run_host"], task["last_run_pid"]) == (socket.gethostname(), os.getpid())
    every = config.entities["task"].schedule.every
    assert every is not None
    until = datetime.fromisoformat(task["next_due_at"]) - datetime.now(UTC)
    assert every - timedelta(seconds=10) < until <= every
    assert user["last_run_host"] is None


def test_a_restarted_instance_runs_its_every_entities_at_start() -> None:
    """A single syncd restarted within an interval runs every `every` entity at once,
    as it always did; a turn served by another live instance stays served."""
    first = Due(interval=60.0, first=True)
    assert decide(first, at(0), None, at(10), restarted=True).granted
    assert not decide(first, at(0), None, at(10), restarted=False).granted
    assert not decide(MINUTE, at(0), None, at(10), restarted=True).granted  # later turns


def test_the_last_starter_is_known_to_be_gone_only_on_this_host(state: Any) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    with state.cursor() as cur:
        cur.execute(
            "INSERT INTO sync_state (entity, last_started_at, last_host, last_pid)"
            " VALUES ('a', now(), %s, %s), ('b', now(), %s, %s), ('c', now(), 'elsewhere', %s)",
            (socket.gethostname(), dead.pid, socket.gethostname(), os.getppid(), dead.pid),
        )
    state.commit()
    first = Due(interval=60.0, first=True)
    assert claim(state, "public", "a", first).granted  # this host's dead process: a restart
    assert not claim(state, "public", "b", first).granted  # a live process here
    assert not claim(state, "public", "c", first).granted  # another host: cannot tell
