"""The source and the database misbehaving: the demo source over real HTTP, real PostgreSQL.

Sleeps are recorded, never slept (tests/support.make_engine), so retries cost no time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg2
import psycopg2.extensions
import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from devtools.demo_source import DemoSource
from devtools.devcluster import Cluster, free_port
from syncd.config.model import Config
from syncd.metrics import Metrics
from syncd.sync.incremental import Engine
from syncd.sync.source import SourceClient
from tests.support import (
    MakeDemo,
    connection,
    demo_setup,
    execute,
    make_engine,
    missing_below_watermark,
    query,
    sync_once,
    versions_in_db,
    versions_in_source,
    watermark,
)

NOW = datetime.now(UTC).replace(microsecond=0)
DATA_END = NOW - timedelta(hours=1)
DATA_START = DATA_END - timedelta(days=20)
INITIAL_FROM = (DATA_START - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
TASKS = 300
KEY_ENV = "SYNCD_TEST_SOURCE_API_KEY"
RIGHT_KEY = "right-key-4f9c2a"
WRONG_KEY = "wrong-key-s3cr3t-77"


DEMO_DATA: dict[str, Any] = {
    "counts": {"task": TASKS, "inspection": 0, "user": 0, "entity": 0},
    "start": DATA_START,
    "end": DATA_END,
}


def new_demo(**kwargs: Any) -> DemoSource:
    """The demo source of `demo`, not started, with other DemoSource arguments."""
    return DemoSource(**DEMO_DATA, **kwargs)


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    return make_demo(**DEMO_DATA)


def tune(
    page_size: int = 100,
    *,
    attempts: int = 6,
    backoff: str = "500ms",
    max_backoff: str = "60s",
    timeout: str = "10s",
    **source: Any,
) -> Callable[[dict[str, Any]], None]:
    """A demo_setup tweak: one window piece over all the data, the given source settings."""

    def tweak(data: dict[str, Any]) -> None:
        data["source"].update(
            page_size=page_size,
            timeout=timeout,
            retries={"attempts": attempts, "backoff": backoff, "max_backoff": max_backoff},
            **source,
        )
        for entity in data["entities"].values():
            entity["window"].update(max="30d", lookback="1m", initial_from=INITIAL_FROM)

    return tweak


def setup(tmp_path: Path, dsn: str, demo: DemoSource, **settings: Any) -> Config:
    return demo_setup(tmp_path, dsn, demo, entities=["task"], tweak=tune(**settings))


def engine_with_sleep(config: Config, sleep: Callable[[float], None]) -> Engine:
    """Like make_engine, but every sleep (source and database) goes to `sleep`."""
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    client = SourceClient(sleep=sleep, observe=metrics.observe_request)
    return Engine(config, metrics, client=client, sleep=sleep)


def migrate_only(config: Config) -> None:
    from syncd.db.schema import migrate

    with connection(config.database.dsn) as conn:
        migrate(conn, config)


@contextmanager
def postgres_stopped_at_request(demo: DemoSource, cluster: Cluster, nth: int) -> Iterator[None]:
    """PostgreSQL stops as the source gets its `nth` request, and stays down until the
    block ends."""
    seen = 0

    def stop_at(entity: str, params: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == nth:
            cluster.stop()

    demo.on_request = stop_at
    try:
        yield
    finally:
        demo.on_request = None
        cluster.start()


def run_statuses(dsn: str) -> list[tuple[Any, ...]]:
    """(status, error) of every sync_time row, oldest first."""
    return query(dsn, "SELECT status, error FROM sync_time ORDER BY id")


# --- authentication and wrong requests -------------------------------------------------


def test_a_wrong_api_key_fails_at_once_after_one_request_without_echoing_the_key(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """401: one request, no retry and no sleep, an error naming 401 and the API key."""
    monkeypatch.setenv(KEY_ENV, WRONG_KEY)
    with new_demo(api_key=RIGHT_KEY) as demo:
        config = setup(tmp_path, pg_dsn, demo, api_key_env=KEY_ENV)
        sleeps: list[float] = []
        result = sync_once(config, "task", sleeps=sleeps)
        assert demo.request_count() == 1
        assert demo.request_count("task", status=401) == 1

    assert result.outcome == "failed"
    assert result.error is not None
    assert "401" in result.error
    assert "API key" in result.error
    assert WRONG_KEY not in result.error
    assert RIGHT_KEY not in result.error
    assert sleeps == []
    assert watermark(pg_dsn, "task") is None
    [(status, error)] = run_statuses(pg_dsn)
    assert status == "failed"
    assert error is not None and WRONG_KEY not in error
    out = capsys.readouterr()
    assert WRONG_KEY not in out.out + out.err


def test_the_api_key_from_the_environment_is_sent_in_its_header(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """source.api_key_env: the key read from the environment opens a keyed source."""
    monkeypatch.setenv(KEY_ENV, RIGHT_KEY)
    with new_demo(api_key=RIGHT_KEY) as demo:
        config = setup(tmp_path, pg_dsn, demo, api_key_env=KEY_ENV)
        result = sync_once(config, "task")
        assert result.outcome == "ok", result.error
        assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def test_a_404_fails_at_once_with_a_message_pointing_at_the_url(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Any other 4xx means the request is wrong: no retries, the URL is in the error."""

    def wrong_url(data: dict[str, Any]) -> None:
        tune()(data)
        data["entities"]["task"]["url"] = demo.base_url + "/api/NoSuchThing"

    config = demo_setup(tmp_path, pg_dsn, demo, entities=["task"], tweak=wrong_url)
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "failed"
    assert result.error is not None
    assert "404" in result.error
    assert f"{demo.base_url}/api/NoSuchThing" in result.error
    assert demo.request_count() == 1
    assert sleeps == []
    assert watermark(pg_dsn, "task") is None


# --- 429 -------------------------------------------------------------------------------------


def test_429_waits_for_retry_after_seconds_then_succeeds(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Retry-After: 7 is slept (recorded) as 7 s, then the request is tried again."""
    config = setup(tmp_path, pg_dsn, demo)
    demo.fail_next(1, 429, entity="task", headers={"Retry-After": "7"})
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "ok", result.error
    assert sleeps == [7.0]
    assert demo.request_count("task", status=429) == 1
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def test_a_retry_after_longer_than_max_backoff_is_capped(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Retry-After: 600 with max_backoff 30s waits 30 s."""
    config = setup(tmp_path, pg_dsn, demo, max_backoff="30s")
    demo.fail_next(2, 429, entity="task", headers={"Retry-After": "600"})
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "ok", result.error
    assert sleeps == [30.0, 30.0]


def test_a_retry_after_given_as_an_http_date_is_honoured(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Retry-After as an HTTP date 20 s ahead waits about 20 s."""
    config = setup(tmp_path, pg_dsn, demo)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    demo.fail_next(1, 429, entity="task", headers={"Retry-After": when})
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "ok", result.error
    [waited] = sleeps
    assert 15.0 < waited <= 20.0


def test_429s_count_as_tries(tmp_path: Path, pg_dsn: str, demo: DemoSource) -> None:
    """A 429 uses up one of retries.attempts: 429s without end fail the run."""
    config = setup(tmp_path, pg_dsn, demo, attempts=3)
    demo.fail_next(10, 429, entity="task", headers={"Retry-After": "1"})
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "failed"
    assert result.error is not None and "3 tries" in result.error
    assert sleeps == [1.0, 1.0]
    assert demo.request_count("task") == 3


# --- 5xx, truncated bodies, timeouts --------------------------------------------------------


def test_5xx_then_success_backs_off_exponentially_with_jitter_and_a_cap(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Try n waits within [b·2^(n-1)/2, b·2^(n-1)], both capped at max_backoff."""
    config = setup(tmp_path, pg_dsn, demo, attempts=6, backoff="1s", max_backoff="3s")
    demo.fail_next(4, 503, entity="task")
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "ok", result.error
    assert len(sleeps) == 4
    for n, waited in enumerate(sleeps, start=1):
        full = min(1.0 * 2 ** (n - 1), 3.0)
        assert full / 2 <= waited <= full, (n, waited)
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def test_5xx_beyond_the_attempts_fails_the_run_and_leaves_the_watermark(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """retries.attempts 5xx in a row: failed, the error counts the tries, nothing moves."""
    config = setup(tmp_path, pg_dsn, demo, attempts=4, backoff="100ms")
    assert sync_once(config, "task").outcome == "ok"
    before = watermark(pg_dsn, "task")
    assert before is not None
    rows_before = versions_in_db(pg_dsn, "task")
    newcomer = demo.insert("task", modified=before + timedelta(seconds=1))
    demo.reset_log()

    demo.fail_next(4, 500, entity="task")
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "failed"
    assert result.error is not None
    assert "after 4 tries" in result.error
    assert "500" in result.error
    assert len(sleeps) == 3
    assert demo.request_count("task") == 4
    assert watermark(pg_dsn, "task") == before
    assert versions_in_db(pg_dsn, "task") == rows_before
    assert str(newcomer["TaskId"]) not in versions_in_db(pg_dsn, "task")
    assert run_statuses(pg_dsn)[-1][0] == "failed"


def test_5xx_in_the_middle_of_a_window_never_moves_the_watermark(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Pages before the failing one may be stored, but the watermark stays where it was."""
    config = setup(tmp_path, pg_dsn, demo, page_size=50, attempts=3, backoff="100ms")
    seen = 0

    def fail_from_the_third_request(entity: str, params: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == 3:
            demo.fail_next(3, 502, entity="task")

    demo.on_request = fail_from_the_third_request
    result = sync_once(config, "task")
    demo.on_request = None

    assert result.outcome == "failed"
    assert result.error is not None and "after 3 tries" in result.error
    assert watermark(pg_dsn, "task") is None
    stored = versions_in_db(pg_dsn, "task")
    assert 0 < len(stored) < TASKS  # the first page committed, the rest did not arrive
    assert all(versions_in_source(demo, "task")[key] == when for key, when in stored.items())

    assert sync_once(config, "task").outcome == "ok"
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def test_truncated_bodies_are_retried_until_a_whole_one_arrives(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """A 200 whose JSON is cut off counts as a failed try and is retried."""
    config = setup(tmp_path, pg_dsn, demo, attempts=4, backoff="100ms")
    demo.truncate_next(3, entity="task")
    sleeps: list[float] = []
    result = sync_once(config, "task", sleeps=sleeps)

    assert result.outcome == "ok", result.error
    assert len(sleeps) == 3
    assert result.fetched == TASKS
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")


def test_truncated_bodies_beyond_the_attempts_fail_without_moving_the_watermark(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Cut-off bodies on every try: failed, the error says the body was not JSON."""
    config = setup(tmp_path, pg_dsn, demo, attempts=3, backoff="100ms")
    demo.truncate_next(3, entity="task")
    result = sync_once(config, "task")

    assert result.outcome == "failed"
    assert result.error is not None
    assert "after 3 tries" in result.error
    assert "JSON" in result.error
    assert watermark(pg_dsn, "task") is None
    assert versions_in_db(pg_dsn, "task") == {}


def test_a_source_slower_than_the_timeout_is_retried(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """A request that outlasts source.timeout is abandoned and tried again."""
    config = setup(tmp_path, pg_dsn, demo, timeout="300ms", attempts=3, backoff="100ms")
    demo.delay_next(1, 1.0, entity="task")
    sleeps: list[float] = []
    engine = make_engine(config, sleeps=sleeps)
    migrate_only(config)
    result = engine.sync_entity("task")

    assert result.outcome == "ok", result.error
    assert len(sleeps) == 1
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    errors = engine.metrics.registry.get_sample_value(
        "syncd_source_requests_total", {"entity": "task", "code": "error"}
    )
    assert errors == 1


# --- PostgreSQL going away ----------------------------------------------------------------


def test_postgres_restarted_mid_sync_reconnects_and_finishes(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, pg_cluster: Cluster
) -> None:
    """A server restart at the 5th page: reconnect (backoff recorded), re-read, end ok."""
    config = setup(tmp_path, pg_dsn, demo, page_size=40)
    seen = 0

    def restart_at_the_fifth_request(entity: str, params: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == 5:
            pg_cluster.restart()

    demo.on_request = restart_at_the_fifth_request
    sleeps: list[float] = []
    try:
        result = sync_once(config, "task", sleeps=sleeps)
    finally:
        demo.on_request = None
        pg_cluster.start()  # whatever happened, leave a running server to the next test

    assert seen > 5
    assert result.outcome == "ok", result.error
    assert sleeps  # the reconnect's backoff, recorded instead of slept
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    assert result.watermark is not None and result.watermark > DATA_END
    assert watermark(pg_dsn, "task") == result.watermark
    assert run_statuses(pg_dsn) == [("ok", None)]


def test_postgres_down_across_the_first_reconnect_is_still_waited_for(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, pg_cluster: Cluster
) -> None:
    """The server stops at the 5th page and is back only after the second backoff:
    a reconnect that fails is one more try of the piece, not the end of the run."""
    config = setup(tmp_path, pg_dsn, demo, page_size=40)
    migrate_only(config)
    seen = 0
    sleeps: list[float] = []
    stopped = threading.Event()

    def stop_at_the_fifth_request(entity: str, params: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == 5:
            pg_cluster.stop()
            stopped.set()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if stopped.is_set() and len(sleeps) == 2:
            pg_cluster.start()  # the server comes back during the second wait

    demo.on_request = stop_at_the_fifth_request
    try:
        result = engine_with_sleep(config, sleep).sync_entity("task")
    finally:
        demo.on_request = None
        pg_cluster.start()

    assert stopped.is_set()
    assert result.outcome == "ok", result.error
    assert len(sleeps) >= 2
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    assert watermark(pg_dsn, "task") == result.watermark


def test_a_session_killed_mid_upsert_is_retried_and_logged_with_the_servers_reason(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """The server ends the session inside the first INSERT (a trigger terminates its own
    backend, once): the run reconnects and ends ok, and the warning it logs gives the
    reason the connection died, not a follow-up error from using the dead one."""
    config = setup(tmp_path, pg_dsn, demo, page_size=100)
    migrate_only(config)
    execute(
        pg_dsn,
        """
        CREATE SEQUENCE kill_once;
        CREATE FUNCTION kill_own_session() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('kill_once') = 1 THEN  -- a sequence: not undone by the abort
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);  -- the termination lands here, in the statement
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER kill_own_session BEFORE INSERT ON task_details
            FOR EACH ROW EXECUTE FUNCTION kill_own_session();
        """,
    )
    sleeps: list[float] = []
    with structlog.testing.capture_logs() as logs:
        result = make_engine(config, sleeps=sleeps).sync_entity("task")

    assert result.outcome == "ok", result.error
    assert len(sleeps) == 1
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    [lost] = [e for e in logs if e["event"] == "sync.db_connection_lost"]
    # What the server said (libpq's words for it), not "cursor already closed" from a
    # ROLLBACK TO SAVEPOINT tried on the dead connection afterwards.
    reasons = ("terminating connection", "server closed the connection")
    assert any(reason in lost["error"] for reason in reasons), lost


def test_postgres_gone_for_the_rest_of_the_run_fails_it_cleanly(
    tmp_path: Path,
    pg_dsn: str,
    demo: DemoSource,
    pg_cluster: Cluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server stops mid-run and stays down: failed, one-line error, no traceback."""
    config = setup(tmp_path, pg_dsn, demo, page_size=40)
    migrate_only(config)
    sleeps: list[float] = []
    with postgres_stopped_at_request(demo, pg_cluster, 5):
        result = make_engine(config, sleeps=sleeps).sync_entity("task")

    assert result.outcome == "failed"
    assert result.error is not None
    assert "\n" not in result.error
    assert "Traceback" not in capsys.readouterr().err
    assert watermark(pg_dsn, "task") is None
    assert missing_below_watermark(pg_dsn, demo, "task") == {}
    # The next run closes the orphaned `running` row (if any) and completes.
    assert sync_once(config, "task").outcome == "ok"
    assert versions_in_db(pg_dsn, "task") == versions_in_source(demo, "task")
    assert all(status != "running" for status, _ in run_statuses(pg_dsn))


def test_postgres_unreachable_for_the_whole_run_fails_with_a_clear_error(
    tmp_path: Path, demo: DemoSource, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens at the DSN: failed, the error names the database, no traceback."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    config = setup(tmp_path, dsn, demo)
    sleeps: list[float] = []
    result = make_engine(config, sleeps=sleeps).sync_entity("task")

    assert result.outcome == "failed"
    assert result.error is not None
    assert "database" in result.error
    assert "\n" not in result.error
    assert demo.request_count() == 0
    assert "Traceback" not in capsys.readouterr().err


# --- metrics -----------------------------------------------------------------------------


def test_request_and_record_metrics_match_the_run(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """syncd_source_requests_total counts each answer by code; record counters match."""
    config = setup(tmp_path, pg_dsn, demo, backoff="100ms")
    migrate_only(config)
    demo.bad_records("task", 2, kinds=["bad_field"], modified=DATA_END - timedelta(days=1))
    demo.fail_next(3, 500, entity="task")
    engine = make_engine(config)
    result = engine.sync_entity("task")
    assert result.outcome == "ok", result.error

    def sample(name: str, **labels: str) -> float | None:
        return engine.metrics.registry.get_sample_value(name, {"entity": "task", **labels})

    assert sample("syncd_source_requests_total", code="500") == 3
    assert sample("syncd_source_requests_total", code="200") == demo.request_count(
        "task", status=200
    )
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM task_details")
    assert count == TASKS
    assert sample("syncd_records_fetched_total") == result.fetched == TASKS + 2
    assert sample("syncd_records_written_total") == result.written == TASKS
    assert sample("syncd_records_rejected_total") == result.rejected == 2
    assert sample("syncd_sync_runs_total", kind="incremental", status="ok") == 1
    assert sample("syncd_sync_runs_total", kind="incremental", status="failed") == 0
    assert result.watermark is not None
    assert sample("syncd_watermark_timestamp_seconds") == result.watermark.timestamp()


def test_a_run_end_the_database_could_not_take_is_recorded_by_the_next_run(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, pg_cluster: Cluster
) -> None:
    """The database goes away mid-run for longer than the reconnect tries: the run's
    `sync_time` row cannot be closed. The next run of the entity (same process) writes
    that run's real error, instead of calling it "interrupted"."""
    config = setup(tmp_path, pg_dsn, demo, page_size=40)
    migrate_only(config)
    engine = make_engine(config)
    with postgres_stopped_at_request(demo, pg_cluster, 5):
        first = engine.sync_entity("task")
    assert first.outcome == "failed" and first.error is not None
    assert run_statuses(pg_dsn) == [("running", None)]  # its end could not be written

    assert engine.sync_entity("task").outcome == "ok"
    assert run_statuses(pg_dsn) == [("failed", first.error), ("ok", None)]


class _LockCheckingConnection(psycopg2.extensions.connection):
    """Records, as it closes, how many advisory locks its session still holds."""

    held_at_close: ClassVar[list[int]] = []

    def close(self) -> None:
        if not self.closed:
            with self.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
                row = cur.fetchone()
            self.rollback()
            self.held_at_close.append(int(row[0]) if row else -1)
        super().close()


def test_a_run_releases_its_lock_before_closing_its_connection(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """PostgreSQL frees a closed session's locks only when its backend has exited, a
    moment later: a run that relied on that made the entity's next run skip now and then
    ("another instance holds the lock", 3 in ~1,550 runs of one instance)."""
    config = setup(tmp_path, pg_dsn, demo)
    migrate_only(config)
    engine = make_engine(config)
    engine.connect = lambda: _connect_checked(config)  # type: ignore[method-assign]
    _LockCheckingConnection.held_at_close = []
    assert engine.sync_entity("task").outcome == "ok"
    assert engine.sync_entity("task").outcome == "ok"
    assert _LockCheckingConnection.held_at_close == [0, 0]


def _connect_checked(config: Config) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(config.database.dsn, connection_factory=_LockCheckingConnection)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn
