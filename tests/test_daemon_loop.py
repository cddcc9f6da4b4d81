"""The daemon's loop in this process: fake clocks, a fake engine, no database, no sleeping.

`Daemon` is built with its seams: a monotonic and a wall clock the test moves, an
engine whose runs block until the test ends them (ok, failed or skipped), a
stand-in for the service's database calls, an HTTP `serve` that only keeps the app,
and an event queue that hands time to the test (`Stepper`). systemd's side is a real
bound AF_UNIX datagram socket, read by tests/daemon_support.py's NotifySocket.

Time only moves when the test says so: when the loop would wait with nothing queued,
it blocks until the test either queues an event or lets the wait run out (`tick`:
the fake clocks move on by exactly the loop's timeout). Between steps the test waits
until the loop is idle again, so every check sees the state the loop settled on.

Longer than most modules: the fakes and the harness (the first half) serve only these
tests, and are easier to follow next to them than in a support module.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import structlog
from prometheus_client import CollectorRegistry

from devtools.demo_config import demo_config, dump
from syncd import logs
from syncd.cli import main as cli
from syncd.config.model import Config, Http
from syncd.db.schedule_state import MANUAL, Due
from syncd.db.schema import PendingMigration
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED
from syncd.http.server import App, Unavailable
from syncd.metrics import Metrics
from syncd.runs import RunKind, RunStatus, SkipReason
from syncd.service import daemon as daemon_module
from syncd.service.daemon import Daemon
from syncd.service.database import ServiceDatabase
from syncd.service.events import (
    Event,
    ReloadRequested,
    RunFinished,
    StopRequested,
    event_for_signal,
)
from syncd.service.state import MAX_WAIT
from syncd.sync.incremental import Engine, RunResult
from syncd.sync.recording import Unrecorded
from syncd.sync.results import RunOutcome
from syncd.sync.source import SourceClient
from tests.daemon_support import NotifySocket

WAIT = 10.0  # seconds: the longest the test waits for another thread to get somewhere
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
Message = dict[str, str]


# --- the fakes --------------------------------------------------------------------------


class Clocks:
    """The monotonic clock starts at 0; the wall clock is T0 plus it. `broken` makes
    the wall clock raise: a bug inside the loop."""

    def __init__(self) -> None:
        self.mono = 0.0
        self.broken = False

    def clock(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        if self.broken:
            raise RuntimeError("an injected bug")
        return T0 + timedelta(seconds=self.mono)


class Stepper:
    """The loop's event queue, with time in the test's hands (see the module docstring)."""

    def __init__(self, clocks: Clocks) -> None:
        self._clocks = clocks
        self._cond = threading.Condition()
        self._events: deque[Event] = deque()
        self._waiting: float | None = None  # the loop's timeout while it waits, else None
        self._tick = False
        self.put_log: list[Event] = []

    def put(self, event: Event) -> None:
        with self._cond:
            self._events.append(event)
            self.put_log.append(event)
            self._cond.notify_all()

    def get(self, timeout: float) -> Event | None:
        with self._cond:
            self._waiting = timeout
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._events or self._tick)
            self._waiting = None
            if self._events:
                return self._events.popleft()
            self._tick = False
            self._clocks.mono += timeout
            self._cond.notify_all()
            return None

    def _idle(self) -> bool:
        return self._waiting is not None and not self._events and not self._tick

    def idle(self) -> float:
        """Wait until the loop waits with nothing queued; returns its timeout."""
        with self._cond:
            assert self._cond.wait_for(self._idle, WAIT), "the loop never went idle"
            assert self._waiting is not None
            return self._waiting

    def tick(self) -> float:
        """Let the loop's wait run out: the clocks move by its timeout (returned)."""
        timeout = self.idle()
        with self._cond:
            self._tick = True
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: not self._tick, WAIT)
        self.idle()
        return timeout

    def count(self, predicate: Callable[[Event], bool]) -> int:
        """How many events queued so far match `predicate`."""
        with self._cond:
            return sum(1 for event in self.put_log if predicate(event))

    def wait_count(self, predicate: Callable[[Event], bool], count: int, what: str) -> None:
        with self._cond:
            found = self._cond.wait_for(
                lambda: sum(1 for event in self.put_log if predicate(event)) >= count, WAIT
            )
            assert found, f"{what} was never queued"


class Runs:
    """What the fake engines were asked to run. A run blocks until the test ends it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_run: set[str] = set()
        self._outcomes: dict[str, RunOutcome] = {}
        self._closing = False  # from now on every run ends ok at once
        self.calls: list[tuple[str, frozenset[str]]] = []  # entity, the engine's entities
        self.turns: list[tuple[str, Due]] = []  # entity, the turn its run claimed
        self.next_in: dict[str, float] = {}  # a skip as served: seconds to the next turn

    def run(self, engine: Engine, name: str) -> RunResult:
        with self._cond:
            self.calls.append((name, frozenset(engine.config.entities)))
            self._in_run.add(name)
            self._cond.notify_all()
            self._cond.wait_for(lambda: name in self._outcomes or self._closing)
            self._in_run.discard(name)
            status = self._outcomes.pop(name, RunOutcome.OK)
            next_in = self.next_in.pop(name, None) if status == RunOutcome.SKIPPED else None
        result = RunResult(name, status, error="it failed" if status == RunOutcome.FAILED else None)
        if status == RunOutcome.SKIPPED:
            result.skip_reason = SkipReason.SERVED if next_in is not None else SkipReason.LOCKED
            result.next_in = next_in
        return result

    def wait_running(self, *names: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._in_run >= set(names), WAIT), (
                f"{names} never started; running: {self._in_run}"
            )

    def in_run(self) -> set[str]:
        with self._cond:
            return set(self._in_run)

    def end(self, name: str, status: RunOutcome) -> None:
        self.wait_running(name)
        with self._cond:
            self._outcomes[name] = status
            self._cond.notify_all()

    def end_all(self) -> None:
        """End every run ok, those under way and those about to start."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()


class FakeEngine(Engine):
    """A real Engine (metrics, client, stop flag) whose runs are the test's."""

    def __init__(self, runs: Runs, config: Config, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(config, metrics, **kwargs)
        self._runs = runs

    def sync_entity(self, name: str, due: Due = MANUAL) -> RunResult:
        self._runs.turns.append((name, due))
        result = self._runs.run(self, name)
        self.parts.recorder.count(result)  # as Engine.sync_entity does: the metrics of the run
        return result


class FakeDatabase(ServiceDatabase):
    """Answers the service's database calls without one. `down`: the database cannot
    be reached; `reload_error`: what migrating for a reloaded file raises."""

    def __init__(self) -> None:
        self.down = False
        self.reload_error: Exception | None = None
        self.prepared: list[list[str]] = []  # the entities of each try at start
        self.checks = 0  # /readyz's database checks

    def prepare(self, config: Config) -> None:
        self.prepared.append(list(config.entities))
        if self.down:
            raise psycopg2.OperationalError("connection refused")

    def migrate_for_reload(self, config: Config) -> PendingMigration | None:
        if self.reload_error is not None:
            raise self.reload_error
        return PendingMigration(config) if self.down else None

    def seed_metrics(self, config: Config, metrics: Metrics) -> dict[str, datetime]:
        return {}

    def answers(self, config: Config) -> tuple[bool, str]:
        self.checks += 1
        return (False, "database: connection refused") if self.down else (True, "ready")

    def entity_status(self, config: Config, now: datetime) -> list[dict[str, Any]]:
        return [{"entity": name} for name in config.entities]


class FakeServer:
    port = 0

    def __init__(self, app: App) -> None:
        self.app = app
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True


# --- the harness ------------------------------------------------------------------------


def write_config(path: Path, entities: dict[str, str]) -> None:
    """A configuration with `entities` (demo entity -> `every` interval)."""
    data = demo_config(
        "postgresql://syncd@127.0.0.1:9/nowhere",
        "http://127.0.0.1:9",
        entities=list(entities),
        initial_from="2026-05-01 00:00:00",
        listen="127.0.0.1:0",
    )
    for name, every in entities.items():
        data["entities"][name]["schedule"] = {"every": every}
    path.write_text(dump(data))


class Harness:
    def __init__(self, config: Path, notify: NotifySocket, environ: dict[str, str]) -> None:
        self.config = config
        self.notify = notify
        self.clocks = Clocks()
        self.inbox = Stepper(self.clocks)
        self.runs = Runs()
        self.database = FakeDatabase()
        self.server: FakeServer | None = None
        self.exit: list[int] = []
        self.error: list[BaseException] = []
        self.thread: threading.Thread | None = None
        self.daemon = Daemon(
            str(config),
            environ={"NOTIFY_SOCKET": notify.path, **environ},
            clock=self.clocks.clock,
            wall=self.clocks.wall,
            engine_factory=self.make_engine,
            database=self.database,
            serve=self.serve,
            inbox=self.inbox,
            signals=False,
        )

    def make_engine(
        self,
        config: Config,
        metrics: Metrics,
        *,
        client: SourceClient | None = None,
        stop: threading.Event | None = None,
        migration: PendingMigration | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> Engine:
        return FakeEngine(
            self.runs,
            config,
            metrics,
            client=client,
            stop=stop,
            migration=migration,
            unrecorded=unrecorded,
        )

    def serve(self, http: Http, registry: CollectorRegistry, app: App) -> FakeServer:
        self.server = FakeServer(app)
        return self.server

    @property
    def app(self) -> App:
        assert self.server is not None
        return self.server.app

    def start(self) -> None:
        def run() -> None:
            try:
                self.exit.append(self.daemon.run())
            except BaseException as exc:
                self.error.append(exc)

        self.thread = threading.Thread(target=run, name="daemon-loop", daemon=True)
        self.thread.start()

    def signal(self, signum: int) -> None:
        """What the daemon's handler queues for `signum`, then the loop settled."""
        self.inbox.put(event_for_signal(signum))
        if signum == signal.SIGHUP:
            self.inbox.idle()

    def advance_to(self, mono: float) -> None:
        while self.clocks.mono < mono:
            self.inbox.tick()

    def end(self, name: str, status: RunOutcome) -> None:
        """End `name`'s run with `status`, then let the loop take it in."""

        def finished(event: Event) -> bool:
            return isinstance(event, RunFinished) and event.result.entity == name

        before = self.inbox.count(finished)
        self.runs.end(name, status)
        self.inbox.wait_count(finished, before + 1, f"the end of {name}'s run")
        self.inbox.idle()

    def running(self) -> dict[str, float]:
        """Running entities and their monotonic start, once the loop is idle."""
        self.inbox.idle()
        return dict(self.daemon.state.running)

    def wait_exit(self) -> int:
        assert self.thread is not None
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the daemon did not exit"
        if self.error:
            raise self.error[0]
        return self.exit[0]

    def messages(self) -> list[Message]:
        """Every sd_notify message sent so far (WATCHDOG=1 left out)."""
        self.inbox.idle()
        got = []
        while (message := self.notify.receive(0.2)) is not None:
            if message.get("WATCHDOG") != "1":
                got.append(message)
        return got

    def sample(self, name: str, **labels: str) -> float | None:
        return self.daemon.registry.get_sample_value(name, labels)

    def close(self) -> None:
        """Whatever the test left: runs ended, then the daemon stopped (a daemon left
        with blocked runs would os._exit this process)."""
        if self.thread is None or not self.thread.is_alive():
            return
        self.runs.end_all()
        self.inbox.put(event_for_signal(signal.SIGTERM))
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the daemon did not drain at the end of the test"


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


class LeftWithRunningSyncs(Exception):
    """The daemon called os._exit: it would have ended this test process."""


@pytest.fixture
def make(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def no_exit(status: int) -> None:
        raise LeftWithRunningSyncs(status)

    monkeypatch.setattr(os, "_exit", no_exit)

    def make(entities: dict[str, str], **environ: str) -> Harness:
        config = tmp_path / "syncd.yaml"
        write_config(config, entities)
        harness = Harness(config, notify, environ)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def started(h: Harness) -> Message:
    """Start the daemon and return its READY=1."""
    h.start()
    ready = h.notify.wait_for(lambda m: m.get("READY") == "1", WAIT, "READY=1")
    return ready


def test_sighup_reloads_and_sigterm_and_sigint_stop() -> None:
    assert event_for_signal(signal.SIGHUP) == ReloadRequested()
    assert event_for_signal(signal.SIGTERM) == StopRequested(signal.SIGTERM)
    assert event_for_signal(signal.SIGINT) == StopRequested(signal.SIGINT)


# --- start and interval -----------------------------------------------------------------


def test_every_entity_runs_at_start_then_once_per_interval(make: Callable[..., Harness]) -> None:
    h = make({"task": "60s", "user": "90s"})
    assert started(h)["STATUS"] == "ready: 2 entities, 0 running"
    assert h.running() == {"task": 0.0, "user": 0.0}
    assert h.messages()[-1] == {"STATUS": "ready: 2 entities, 2 running"}
    h.runs.wait_running("task", "user")
    h.end("task", RunOutcome.OK)
    h.end("user", RunOutcome.OK)
    assert h.running() == {}
    assert h.inbox.idle() == MAX_WAIT  # the loop ticks at least every MAX_WAIT seconds
    h.advance_to(55.0)
    assert h.running() == {}
    h.advance_to(60.0)
    assert h.running() == {"task": 60.0}
    h.end("task", RunOutcome.OK)
    h.advance_to(90.0)
    assert h.running() == {"user": 90.0}
    h.end("user", RunOutcome.OK)
    h.advance_to(120.0)
    assert h.running() == {"task": 120.0}
    h.runs.wait_running("task")
    assert sorted(name for name, _ in h.runs.calls[:2]) == ["task", "user"]
    assert [name for name, _ in h.runs.calls[2:]] == ["task", "user", "task"]


def test_the_watchdog_is_fed_from_the_loop_at_half_its_interval(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s"}, WATCHDOG_USEC="4000000")  # WATCHDOG=1 every 2 s
    started(h)
    h.runs.wait_running("task")
    h.end("task", RunOutcome.OK)
    assert h.inbox.idle() == 2.0
    h.notify.collect(0.2)  # what came so far
    for _ in range(3):
        assert h.inbox.tick() == 2.0
        h.notify.wait_for(lambda m: m == {"WATCHDOG": "1"}, WAIT, "WATCHDOG=1")


def test_a_manual_run_starts_at_once_and_restarts_the_interval(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s"})
    started(h)
    h.end("task", RunOutcome.OK)
    h.advance_to(30.0)
    assert h.app.trigger("task") is True
    assert h.app.trigger("nosuch") is False
    assert h.running() == {"task": 30.0}
    h.end("task", RunOutcome.OK)
    h.advance_to(85.0)
    assert h.running() == {}
    h.advance_to(90.0)
    assert h.running() == {"task": 90.0}


def test_readyz_checks_the_database_at_most_once_per_ready_cache(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s"})
    started(h)
    assert [h.app.ready() for _ in range(3)] == [(True, "ready")] * 3
    assert h.database.checks == 1
    h.database.down = True
    h.inbox.tick()  # 5 s later: the cached answer is stale
    assert h.app.ready() == (False, "database: connection refused")
    assert h.app.ready() == (False, "database: connection refused")
    assert h.database.checks == 2


# --- how a run ended --------------------------------------------------------------------


def test_a_turn_served_by_another_instance_moves_the_next_run_to_its_cadence(
    make: Callable[..., Harness],
) -> None:
    """The shared schedule: each scheduled run claims its interval (manual ones are
    marked so); skipped as served, the next try is when the other instance's interval
    ends (plus the claim's slack, a second), not one whole local interval later."""
    h = make({"task": "60s"})
    started(h)
    h.runs.wait_running("task")
    assert h.runs.turns == [("task", Due(interval=60.0, first=True))]
    h.runs.next_in["task"] = 20.0  # another instance started it 40 s ago
    h.end("task", RunOutcome.SKIPPED)
    assert h.sample("syncd_sync_skipped_total", entity="task", reason="served") == 1
    h.advance_to(20.0)
    assert h.running() == {}
    h.advance_to(21.0)
    assert h.running() == {"task": 21.0}
    h.end("task", RunOutcome.OK)
    assert h.app.trigger("task")
    h.runs.wait_running("task")
    assert h.runs.turns[-1] == ("task", Due(manual=True, interval=60.0))


def test_a_skipped_run_is_not_a_failure_and_is_counted_apart(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s", "user": "60s"})
    started(h)
    h.end("task", RunOutcome.SKIPPED)  # another instance holds the lock
    h.end("user", RunOutcome.OK)
    assert h.messages()[-1] == {"STATUS": "ready: 2 entities, 0 running"}
    assert h.daemon.last_results["task"].outcome == RunOutcome.SKIPPED
    assert h.daemon.last_results["user"].outcome == RunOutcome.OK
    assert h.sample("syncd_sync_skipped_total", entity="task", reason="locked") == 1
    assert h.sample("syncd_sync_skipped_total", entity="user", reason="locked") == 0
    incremental = RunKind.INCREMENTAL
    assert h.sample("syncd_sync_runs_total", entity="task", kind=incremental, status="ok") == 0
    assert h.sample("syncd_sync_runs_total", entity="user", kind=incremental, status="ok") == 1
    # Either way the next try is the next due time, not a retry at once.
    h.advance_to(55.0)
    assert h.running() == {}
    h.advance_to(60.0)
    assert h.running() == {"task": 60.0, "user": 60.0}


def test_a_failed_run_shows_in_status_until_a_run_succeeds(make: Callable[..., Harness]) -> None:
    h = make({"task": "60s"})
    started(h)
    h.end("task", RunOutcome.FAILED)
    assert h.messages()[-1] == {"STATUS": "ready: 1 entities, 0 running, failing: task"}
    failed = {"entity": "task", "kind": RunKind.INCREMENTAL, "status": RunStatus.FAILED}
    assert h.sample("syncd_sync_runs_total", **failed) == 1
    h.advance_to(60.0)
    h.end("task", RunOutcome.OK)
    assert h.messages()[-1] == {"STATUS": "ready: 1 entities, 0 running"}


# --- reload -----------------------------------------------------------------------------


def test_a_reload_adds_and_drops_entities_without_cutting_a_running_one(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s", "user": "60s"})
    started(h)
    h.end("user", RunOutcome.OK)  # task keeps running through the reload
    h.messages()
    write_config(h.config, {"task": "60s", "inspection": "60s"})
    h.signal(signal.SIGHUP)
    reloading, ready, *rest = h.messages()
    assert reloading["RELOADING"] == "1" and "MONOTONIC_USEC" in reloading
    assert ready == {"READY": "1", "STATUS": "reloaded: 2 entities, 1 running"}
    assert rest == [{"STATUS": "ready: 2 entities, 2 running"}]
    assert h.running() == {"task": 0.0, "inspection": 0.0}  # added: at once
    assert h.sample("syncd_config_last_reload_successful") == 1
    assert h.sample("syncd_sync_skipped_total", entity="user", reason="locked") is None  # forgotten
    assert h.sample("syncd_sync_skipped_total", entity="inspection", reason="served") == 0
    # The running task was not cut: it ends when its engine (the old one) says so.
    assert "task" in h.runs.in_run()
    h.end("task", RunOutcome.OK)
    h.end("inspection", RunOutcome.OK)
    h.advance_to(60.0)
    assert h.running() == {"task": 60.0, "inspection": 60.0}  # user: never again
    h.runs.wait_running("task", "inspection")
    engines = {name: entities for name, entities in h.runs.calls}
    assert engines["task"] == {"task", "inspection"}  # the run after: the new engine
    first_task = next(entities for name, entities in h.runs.calls if name == "task")
    assert first_task == {"task", "user"}


def test_a_reload_while_the_database_is_away_leaves_the_migration_to_the_runs(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s"})
    started(h)
    h.end("task", RunOutcome.OK)
    h.messages()
    write_config(h.config, {"task": "60s", "user": "60s"})
    h.database.down = True
    h.signal(signal.SIGHUP)
    _, ready, *_ = h.messages()
    assert ready == {
        "READY": "1",
        "STATUS": "reloaded: 2 entities, 0 running, migration waits for the database",
    }
    runtime = h.daemon.state.runtime
    assert runtime is not None and runtime.engine.migration is not None
    assert h.running() == {"user": 0.0}  # its run migrates first (per entity)
    assert h.sample("syncd_config_last_reload_successful") == 1


def test_a_refused_reload_keeps_the_old_configuration(make: Callable[..., Harness]) -> None:
    h = make({"task": "60s"})
    started(h)
    h.end("task", RunOutcome.OK)
    h.messages()
    h.config.write_text("entities: [not, a, mapping\n")
    h.signal(signal.SIGHUP)
    reloading, ready = h.messages()
    assert reloading["RELOADING"] == "1"
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("reload refused, old config kept: line ")
    assert h.sample("syncd_config_last_reload_successful") == 0
    h.advance_to(60.0)
    assert h.running() == {"task": 60.0}  # the old schedule runs on
    h.end("task", RunOutcome.OK)
    # A valid file the database refuses (not an outage) is refused too.
    write_config(h.config, {"task": "60s", "user": "60s"})
    h.database.reload_error = psycopg2.ProgrammingError("permission denied for schema")
    h.messages()
    h.signal(signal.SIGHUP)
    _, ready = h.messages()
    assert ready == {
        "READY": "1",
        "STATUS": "reload refused, old config kept: database: permission denied for schema",
    }
    assert h.running() == {}  # no user
    assert h.daemon.state.config is not None and list(h.daemon.state.config.entities) == ["task"]


# --- stop -------------------------------------------------------------------------------


def test_sigterm_drains_the_running_syncs_then_exits_zero(make: Callable[..., Harness]) -> None:
    h = make({"task": "60s", "user": "30s"})
    started(h)
    h.end("user", RunOutcome.OK)
    h.messages()
    h.inbox.put(event_for_signal(signal.SIGTERM))
    assert h.messages() == [{"STOPPING": "1"}]
    assert h.app.ready() == (False, "stopping")
    assert h.daemon.stop_syncs.is_set()  # runs stop between pages
    h.advance_to(60.0)  # user is due, but nothing new starts while draining
    assert h.running() == {"task": 0.0}
    assert h.thread is not None and h.thread.is_alive()
    h.runs.end("task", RunOutcome.FAILED)  # "stopped before the window was complete"
    assert h.wait_exit() == EXIT_OK
    assert [name for name, _ in h.runs.calls] in (["task", "user"], ["user", "task"])
    assert h.server is not None and h.server.shut


def test_a_stop_while_waiting_for_the_database_exits_zero_and_a_reload_rereads_the_file(
    make: Callable[..., Harness],
) -> None:
    h = make({"task": "60s"})
    h.database.down = True
    h.start()
    h.notify.wait_for(
        lambda m: m.get("STATUS") == "waiting for the database: connection refused",
        WAIT,
        "the database wait",
    )
    extend = [m for m in h.notify.messages if "EXTEND_TIMEOUT_USEC" in m]
    assert extend and int(extend[0]["EXTEND_TIMEOUT_USEC"]) >= 60_000_000
    assert h.app.ready() == (False, "waiting for the database: connection refused")
    with pytest.raises(Unavailable, match="starting: waiting for the database"):
        h.app.status()
    h.inbox.tick()  # 1 s: the next try
    assert len(h.database.prepared) == 2
    write_config(h.config, {"task": "60s", "user": "60s"})
    h.signal(signal.SIGHUP)
    assert h.database.prepared[-1] == ["task", "user"]  # tried at once, with the new file
    h.inbox.put(event_for_signal(signal.SIGTERM))
    assert h.wait_exit() == EXIT_OK
    h.notify.wait_for(lambda m: m == {"STOPPING": "1"}, WAIT, "STOPPING=1")
    assert h.runs.calls == []


# --- a bug ------------------------------------------------------------------------------


def test_a_bug_in_the_loop_is_logged_then_exits_one(
    make: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through `syncd run`'s own error handling: the cause logged first (daemon.crashed,
    with its traceback), then exit 1 (so Restart=on-failure restarts it)."""
    h = make({"task": "60s"})

    def seamed(path: str) -> Daemon:
        assert path == str(h.config)
        return h.daemon

    monkeypatch.setattr(daemon_module, "Daemon", seamed)
    monkeypatch.setattr(logs, "configure", lambda **_: None)  # keep capture_logs in place
    outcome: list[int] = []
    with structlog.testing.capture_logs() as logged:
        h.thread = threading.Thread(
            target=lambda: outcome.append(cli.main(["-c", str(h.config), "run"])), daemon=True
        )
        h.thread.start()
        h.notify.wait_for(lambda m: m.get("READY") == "1", WAIT, "READY=1")
        h.end("task", RunOutcome.OK)  # nothing running: the crash leaves no sync behind
        h.inbox.idle()
        h.clocks.broken = True
        assert h.app.trigger("task")  # wakes the loop, whose next look at the time fails
        h.thread.join(WAIT)
    assert outcome == [EXIT_RUN_FAILED]
    events = [entry["event"] for entry in logged]
    crashed = events.index("daemon.crashed")
    assert logged[crashed]["exc_info"] is True
    assert events[crashed + 1 :] == ["daemon.stopped"]
    stopped = logged[crashed + 1]
    assert (stopped["log_level"], stopped["exit_status"]) == ("error", EXIT_RUN_FAILED)
    assert "syncd: internal error: RuntimeError: an injected bug" in capsys.readouterr().err
