"""`syncd run`: the long-running service, and its main loop.

The loop owns every decision; everything else only puts typed events on its queue
(syncd.service.events): signal handlers, the sync pool's threads when a run ends,
the HTTP thread for a manual run, the preload thread when it ends. The loop waits
on that queue with a timeout: until the scheduler's next due time, capped by half
the watchdog interval, so `WATCHDOG=1` comes from the loop itself and a stuck loop
is restarted by systemd.

Start: load the config, bind the HTTP port (health, readiness and metrics answer
from now on), wait for the database and migrate (syncd.service.startup), then
`READY=1`. SIGHUP: `RELOADING=1`, parse and validate the whole new file and migrate
for it (or, with the database away, leave the migration to the first run that
reaches it); on success swap the engine and the schedules (running syncs finish
with the config they started with), on failure keep the old config; then `READY=1`
either way, with a `STATUS=` line saying which. A reload never ends the loop.
SIGTERM/SIGINT: `STOPPING=1`, stop scheduling, cut requests to sources, let pages
being written commit, exit 0; a second signal exits at once. Any other end is a
non-zero exit: 2 when the file or a table contradicts the configuration at start,
else an exception (logged first as `daemon.crashed`) that the caller makes exit 1.
See docs/operations.md, "Running under systemd".

The other jobs live beside it: what the HTTP server asks (app.py), the preload
thread (preloads.py), the database wait at start (startup.py), the service's own
database calls (database.py), the rules of a reload (reload.py) and the STATUS=
text (summary.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import FrameType
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry

from syncd.config.loader import load_config
from syncd.config.model import Config, Http
from syncd.db.schedule_state import Due
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, ConfigError, SyncdError
from syncd.http.server import App
from syncd.http.server import serve as serve_http
from syncd.ingest.ingestor import Ingestor
from syncd.metrics import Metrics
from syncd.service.app import ServiceApp
from syncd.service.context import ServiceContext
from syncd.service.database import ServiceDatabase
from syncd.service.events import (
    HANDLED_SIGNALS,
    EventQueue,
    Inbox,
    PreloadsEnded,
    ReloadRequested,
    RunFinished,
    RunRequested,
    StopRequested,
    event_for_signal,
)
from syncd.service.preloads import PreloadThread
from syncd.service.reload import Reloader
from syncd.service.scheduler import Scheduler, schedules
from syncd.service.startup import DatabaseWait
from syncd.service.state import MAX_WAIT, EngineFactory, Health, Runtime, ServiceState
from syncd.service.summary import status_summary
from syncd.service.systemd import Notifier
from syncd.sync.incremental import Engine, RunResult
from syncd.sync.results import RunOutcome

log = structlog.get_logger("syncd.service.daemon")

STOP_GRACE = 80.0  # seconds running syncs get to commit after SIGTERM (unit: 90s)
PRELOAD_JOIN = 1.0  # seconds an idle preload thread gets to return at the end


class Server(Protocol):
    """The running HTTP server (syncd.http.server.ServerHandle)."""

    port: int

    def shutdown(self) -> None: ...


Serve = Callable[[Http, CollectorRegistry, App], Server]


class Daemon:
    def __init__(
        self,
        config_path: str,
        *,
        environ: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        engine_factory: EngineFactory = Engine,
        database: ServiceDatabase | None = None,
        serve: Serve = serve_http,
        inbox: Inbox | None = None,
        signals: bool = True,
    ) -> None:
        """Everything after `config_path` is a seam with the production default: a
        test drives the loop with its own clocks, engine, database, server and
        queue, and queues signal events itself (`signals=False`: run() installs no
        handlers, which only the main thread may)."""
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier = notifier or Notifier(self.environ)
        self.clock = clock
        self.wall = wall
        self.inbox = inbox or EventQueue()
        self.database = database or ServiceDatabase()
        self._engine_factory = engine_factory
        self._serve = serve
        self._signals = signals
        self.stop_syncs = threading.Event()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, process=True)
        self.state = ServiceState(health=Health(heartbeat=clock()))
        self.context = ServiceContext(
            config_path=self.config_path,
            environ=self.environ,
            state=self.state,
            metrics=self.metrics,
            notifier=self.notifier,
            database=self.database,
            clock=clock,
            wall=wall,
        )
        self.app = ServiceApp(self.state, self.inbox, self.database, clock, wall)
        self.preloads = PreloadThread(
            lambda: self.state.runtime,
            self.metrics,
            self.stop_syncs,
            on_exit=lambda: self.inbox.put(PreloadsEnded()),
        )
        self.last_results: dict[str, RunResult] = {}
        self.stop_deadline = 0.0
        self.server: Server | None = None
        self.pool: ThreadPoolExecutor | None = None

    # -- the edges: signals ------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.inbox.put(event_for_signal(signum))

    def install_signals(self) -> None:
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)

    # -- start -------------------------------------------------------------------

    def run(self) -> int:
        """The daemon, until asked to stop: 0 then. Any other end is non-zero, and its
        cause is logged first (an unexpected error also reaches the caller)."""
        if self._signals:
            self.install_signals()
        try:
            config = load_config(self.config_path, self.environ)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config.invalid", problem=problem)
            self.notifier.status(f"refused to start: {exc}")
            return EXIT_USAGE
        self.state.config = config
        self.metrics.declare(config.entities)
        # The port first: while the database is awaited, /healthz answers, /readyz says
        # why syncd is not ready, and Prometheus sees the process (not `up == 0`).
        try:
            self.server = self._serve(config.http, self.registry, self.app)
        except OSError as exc:
            log.error("daemon.cannot_listen", listen=f"{config.http.host}:{config.http.port}")
            raise SyncdError(
                f"http.listen {config.http.host}:{config.http.port}: {exc.strerror or exc}"
            ) from None
        status = EXIT_RUN_FAILED  # until the loop says it was asked to stop
        try:
            try:
                started = self._database_wait().until_prepared(config)
            except SyncdError as exc:  # a table contradicts the configuration
                log.error("config.invalid", problem=str(exc))
                self.notifier.status(f"refused to start: {exc}")
                status = EXIT_USAGE
                return status
            if started is None:
                status = EXIT_OK  # stopped while waiting
                return status
            self._start(started)
            status = self._loop()
            return status
        except Exception:
            log.exception("daemon.crashed")
            raise
        finally:
            self._shutdown(status)

    def _database_wait(self) -> DatabaseWait:
        return DatabaseWait(self.context, self.inbox)

    def _reloader(self) -> Reloader:
        return Reloader(
            self.context,
            engine_factory=self._engine_factory,
            stop=self.stop_syncs,
            preloads=self.preloads,
            status_line=self._status_line,
        )

    def _start(self, config: Config) -> None:
        """The database answered and is migrated: start scheduling, then READY=1."""
        state = self.state
        state.runtime = Runtime(
            config, self._engine_factory(config, self.metrics, stop=self.stop_syncs)
        )
        successes = self.database.seed_metrics(config, self.metrics)
        scheduler = Scheduler(
            schedules(config),
            config.scheduler.max_concurrent,
            last_success={name: successes.get(name) for name in config.entities},
        )
        state.scheduler = scheduler
        state.ingestor = Ingestor(config, self.metrics)
        # The scheduler enforces scheduler.max_concurrent (a reload may raise it); the
        # pool only needs room for it, and starts threads as they are needed.
        self.pool = ThreadPoolExecutor(
            max_workers=max(64, config.scheduler.max_concurrent), thread_name_prefix="sync"
        )
        with state.scheduler_lock:
            scheduler.start(self.clock(), self.wall())
        state.health.ready = (True, "ready")
        self.preloads.start()
        self.notifier.ready(self._status_line())
        assert self.server is not None
        log.info(
            "daemon.ready",
            entities=list(config.entities),
            listen=f"{config.http.host}:{self.server.port}",
        )

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> int:
        assert self.state.scheduler is not None
        while True:
            self._start_due_runs()
            event = self.inbox.get(self._wait_time())
            self.state.health.heartbeat = self.clock()
            self.notifier.watchdog()
            match event:
                case ReloadRequested():
                    self._reloader().reload()
                case StopRequested():
                    if self._begin_stop():
                        return EXIT_OK
                case RunFinished(result):
                    self._job_done(result)
                case RunRequested(entity):
                    with self.state.scheduler_lock:
                        self.state.scheduler.run_now(entity)
                case PreloadsEnded() | None:
                    pass  # a tick, or the end of the preloads: the drain check below
            if self.state.stopping and (self._drained() or self.clock() > self.stop_deadline):
                return EXIT_OK

    def _drained(self) -> bool:
        return not self.state.running and not self.preloads.is_alive()

    def _wait_time(self) -> float:
        scheduler = self.state.scheduler
        assert scheduler is not None
        wait = MAX_WAIT
        if not self.state.stopping:
            due = scheduler.sleep_for(self.clock(), self.wall())
            if due is not None:
                wait = min(wait, max(0.0, due))
        interval = self.notifier.watchdog_interval
        if interval is not None:
            wait = min(wait, interval)
        return wait

    def _start_due_runs(self) -> None:
        state = self.state
        assert state.runtime is not None and state.scheduler is not None
        assert self.pool is not None
        if state.stopping:
            return
        engine = state.runtime.engine
        with state.scheduler_lock:
            started = state.scheduler.due(self.clock(), self.wall())
            turns = {name: state.scheduler.started_for(name) for name in started}
            self.metrics.schedule_lag.set(state.scheduler.lag(self.clock()))
        for name in started:
            state.running[name] = self.clock()
            self.pool.submit(self._job, engine, name, turns[name])
        if started:
            self.notifier.status(self._status_line())

    def _job(self, engine: Engine, name: str, due: Due) -> None:
        """In a pool thread: one run; its end goes back to the loop."""
        try:
            result = engine.sync_entity(name, due)
        except BaseException as exc:  # the engine records its own failures; this is a bug
            log.exception("daemon.job_crashed", entity=name)
            result = RunResult(name, RunOutcome.FAILED, error=f"internal error: {exc}")
        self.inbox.put(RunFinished(result))

    def _job_done(self, result: RunResult) -> None:
        state = self.state
        assert state.runtime is not None and state.scheduler is not None
        name = result.entity
        state.running.pop(name, None)
        if name not in state.runtime.config.entities:
            # Removed by a reload while it ran: its run re-created the series.
            self.metrics.forget(name)
            self.last_results.pop(name, None)
        else:
            self.last_results[name] = result
        if not state.stopping:
            with state.scheduler_lock:
                if result.outcome == RunOutcome.SKIPPED:  # locked, or served elsewhere
                    state.scheduler.skipped(name, self.clock(), self.wall(), result.next_in)
                else:
                    state.scheduler.finished(
                        name, self.clock(), self.wall(), ok=result.outcome == RunOutcome.OK
                    )
        self.notifier.status(self._status_line())

    # -- stop --------------------------------------------------------------------

    def _begin_stop(self) -> bool:
        """First stop signal: drain. Second: True, exit now."""
        state = self.state
        if state.stopping:
            log.warning("daemon.stop_now", running=list(state.running))
            return True
        state.stopping = True
        self.stop_syncs.set()
        if state.runtime is not None:
            # A stop never waits for a source: requests in flight are cut now (their
            # runs end failed, their pages uncommitted, the watermark where it was).
            state.runtime.engine.client.cancel_all()
        self.preloads.wake()  # the preload thread may be waiting for work
        self.notifier.stopping()
        log.info("daemon.stopping", running=list(state.running))
        self.stop_deadline = self.clock() + STOP_GRACE
        return False

    def _shutdown(self, status: int) -> None:
        if self.server is not None:
            self.server.shutdown()
        if self.state.ingestor is not None:
            self.state.ingestor.close()
        # However the daemon ends (a crash too), the preload thread is told to end; an
        # idle one returns at once, and then does not count as a sync still running.
        self.stop_syncs.set()
        self.preloads.wake()
        if self.preloads.preloading is None:
            self.preloads.join(PRELOAD_JOIN)
        if self.state.running or self.preloads.is_alive():
            # Asked twice, or the grace time ran out, or a crash. Leaving now is safe:
            # an uncommitted page is rolled back by PostgreSQL and its watermark never
            # moved. os._exit, because the interpreter would otherwise wait for the
            # pool's threads at exit.
            log.warning(
                "daemon.stopped_with_running_syncs",
                running=sorted(self.state.running),
                preloading=self.preloads.preloading,
            )
            os._exit(status)
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        # A crash was logged as daemon.crashed already; this line must not read as a
        # clean stop after it.
        (log.info if status == EXIT_OK else log.error)("daemon.stopped", exit_status=status)

    # -- STATUS= -----------------------------------------------------------------

    def _status_line(self, prefix: str = "ready") -> str:
        runtime = self.state.runtime
        return status_summary(
            prefix,
            len(runtime.config.entities) if runtime else 0,
            self.state.running,
            self.preloads.preloading,
            self.last_results,
        )
