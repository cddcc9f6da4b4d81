"""`syncd run`: the long-running service.

The main loop owns every decision; everything else only puts events on its queue:

* signal handlers queue the signal number and return (they never exit, log or
  touch sdnotify, which swallows every exception, SystemExit included);
* sync jobs run in a thread pool and queue ("done", result) when they end;
* the HTTP thread queues ("run", entity) for `POST /v1/sync/{entity}`.

The loop waits on that queue with a timeout: until the scheduler's next due time,
capped by half the watchdog interval, so `WATCHDOG=1` comes from the loop itself
and a stuck loop is restarted by systemd.

Start: load the config, bind the HTTP port (health, readiness and metrics answer
from now on), wait for the database (a SIGHUP meanwhile re-reads the file), migrate,
then `READY=1`. SIGHUP: `RELOADING=1`, parse and validate the whole new file and
migrate for it (or, with the database away, leave the migration to the first run
that reaches it); on success swap the engine and the schedules (running syncs
finish with the config they started with), on failure keep the old config; then
`READY=1` either way, with a `STATUS=` line saying which. SIGTERM/SIGINT:
`STOPPING=1`, stop scheduling, cut requests to sources, let pages being written
commit, exit 0; a second signal exits at once. Any other end is a non-zero exit.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import psycopg2
import structlog
from prometheus_client import CollectorRegistry

from syncd.config.loader import load_config
from syncd.config.model import Config, Entity, Schedule
from syncd.db.connection import connect, describe_db_error, is_connection_error
from syncd.db.runlog import SyncLog
from syncd.db.schema import PendingMigration, migrate
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, ConfigError, SyncdError
from syncd.http.server import PostHandler, ServerHandle, Unavailable, serve
from syncd.ingest.ingestor import Ingestor, ingest_paths
from syncd.metrics import Metrics
from syncd.service.scheduler import Scheduler
from syncd.service.status import entity_status
from syncd.service.systemd import Notifier
from syncd.sync.incremental import Engine, RunResult
from syncd.sync.preload import Preloader, preload_status

log = structlog.get_logger("syncd.service.daemon")

PRELOAD_RECHECK = 60.0  # seconds between looks for preloads left to do
MAX_WAIT = 5.0  # seconds: the loop ticks at least this often (health, STATUS)
DB_WAIT_MAX = 30.0  # seconds between tries while the database is not there at start
STOP_GRACE = 80.0  # seconds running syncs get to commit after SIGTERM (unit: 90s)
READY_CACHE = 2.0  # seconds a /readyz database check is reused

Event = tuple[str, Any]


@dataclass
class Runtime:
    """What a reload swaps: new runs use the new engine; running ones keep theirs."""

    config: Config
    engine: Engine


@dataclass
class Health:
    """Shared with the HTTP thread: plain values, written by the loop."""

    heartbeat: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0
    ready: tuple[bool, str] = (False, "starting")


class Daemon:
    def __init__(
        self,
        config_path: str,
        *,
        environ: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier = notifier or Notifier(self.environ)
        self.clock = clock
        self.wall = wall
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.stop_syncs = threading.Event()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry, process=True)
        self.health = Health()
        self.running: dict[str, float] = {}  # entity -> monotonic start
        self.last_results: dict[str, RunResult] = {}
        self.config: Config | None = None  # once loaded; runtime once the database answered
        self.runtime: Runtime | None = None
        self.ingestor: Ingestor | None = None
        self.scheduler: Scheduler | None = None
        # The loop changes the scheduler; /status (an HTTP thread) reads it.
        self.scheduler_lock = threading.Lock()
        self.ready_lock = threading.Lock()
        self.stop_deadline = 0.0
        self.preload_wake = threading.Event()
        self.preload_thread = threading.Thread()  # replaced at start
        self.preloading: str | None = None
        self.server: ServerHandle | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.stopping = False

    # -- the edges: signals ------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.events.put(("signal", signum))

    def install_signals(self) -> None:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    # -- start -------------------------------------------------------------------

    def run(self) -> int:
        """The daemon, until asked to stop: 0 then. Any other end is non-zero, and its
        cause is logged first (an unexpected error also reaches the caller)."""
        self.install_signals()
        try:
            config = load_config(self.config_path, self.environ)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config.invalid", problem=problem)
            self.notifier.status(f"refused to start: {exc}")
            return EXIT_USAGE
        self.config = config
        self.metrics.declare(config.entities)
        # The port first: while the database is awaited, /healthz answers, /readyz says
        # why syncd is not ready, and Prometheus sees the process (not `up == 0`).
        try:
            self.server = serve(config.http, self.registry, self)
        except OSError as exc:
            log.error("daemon.cannot_listen", listen=f"{config.http.host}:{config.http.port}")
            raise SyncdError(
                f"http.listen {config.http.host}:{config.http.port}: {exc.strerror or exc}"
            ) from None
        status = EXIT_RUN_FAILED  # until the loop says it was asked to stop
        try:
            try:
                started = self._wait_for_database(config)
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

    def _start(self, config: Config) -> None:
        """The database answered and is migrated: start scheduling, then READY=1."""
        self.runtime = Runtime(config, Engine(config, self.metrics, stop=self.stop_syncs))
        successes = self._seed_metrics(config)
        self.scheduler = Scheduler(
            _schedules(config),
            config.scheduler.max_concurrent,
            last_success={name: successes.get(name) for name in config.entities},
        )
        self.ingestor = Ingestor(config, self.metrics)
        # The scheduler enforces scheduler.max_concurrent (a reload may raise it); the
        # pool only needs room for it, and starts threads as they are needed.
        self.pool = ThreadPoolExecutor(
            max_workers=max(64, config.scheduler.max_concurrent), thread_name_prefix="sync"
        )
        self.scheduler.start(self.clock(), self.wall())
        self.health.ready = (True, "ready")
        self.preload_thread = threading.Thread(
            target=self._preload_worker, name="preload", daemon=True
        )
        self.preload_thread.start()
        self.notifier.ready(self._status_line())
        assert self.server is not None
        log.info(
            "daemon.ready",
            entities=list(config.entities),
            listen=f"{config.http.host}:{self.server.port}",
        )

    def _wait_for_database(self, config: Config) -> Config | None:
        """Migrate once the database answers; returns the configuration to start with
        (a SIGHUP meanwhile re-reads the file), or None if a stop signal came first.

        systemd is kept waiting (EXTEND_TIMEOUT_USEC) rather than killing syncd at
        its start timeout: READY=1 means ready, and a database that comes back is
        used as soon as it answers."""
        delay = 1.0
        while True:
            # Each try takes at most connect_timeout (10 s) plus the wait after it.
            self.notifier.extend_timeout(DB_WAIT_MAX + 40)
            try:
                conn = connect(config.database)
                try:
                    for change in migrate(conn, config):
                        log.info("migrate.applied", change=change)
                    stale = SyncLog(config.database.schema).close_dead_ingests(conn)
                    if stale:
                        log.warning("ingest.interrupted_runs_closed", count=stale)
                finally:
                    conn.close()
                return config
            except psycopg2.Error as exc:
                reason = describe_db_error(exc)
                log.warning("daemon.database_unavailable", error=reason, retry_in=delay)
                self.health.ready = (False, f"waiting for the database: {reason}")
                self.notifier.status(f"waiting for the database: {reason}")
            waited = self._wait_for_signal(delay)
            if waited == signal.SIGHUP:
                config = self._reread_while_starting(config)
                delay = 1.0  # a fixed DSN or password is tried at once
            elif waited is not None:
                return None
            else:
                delay = min(delay * 2, DB_WAIT_MAX)

    def _reread_while_starting(self, config: Config) -> Config:
        """SIGHUP before READY=1: the new file, if valid, is used from the next try (an
        operator fixing the DSN or the password file); else the one in use stays."""
        try:
            new = load_config(self.config_path, self.environ)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload.refused", problem=problem)
            self.metrics.config_reload_ok.set(0)
            return config
        new = self._adopt(new, config)
        self.metrics.config_reload_ok.set(1)
        self.config = new
        log.info("reload.done", entities=list(new.entities), while_starting=True)
        return new

    def _wait_for_signal(self, seconds: float) -> int | None:
        """Wait up to `seconds` for a signal, the heartbeat (/healthz) and the watchdog
        fed at least every MAX_WAIT seconds; SIGTERM/SIGINT also send STOPPING=1."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            self.health.heartbeat = self.clock()
            self.notifier.watchdog()
            try:
                kind, value = self.events.get(
                    timeout=min(left, MAX_WAIT, self.notifier.watchdog_interval or MAX_WAIT)
                )
            except queue.Empty:
                continue
            if kind == "signal":
                if value in (signal.SIGTERM, signal.SIGINT):
                    self.notifier.stopping()
                return int(value)
        self.health.heartbeat = self.clock()
        return None

    def _seed_metrics(self, config: Config) -> dict[str, datetime]:
        """Gauges that describe the database's state, not this process's work.
        Returns when each entity last synced successfully (the scheduler's daily
        catch-up needs it too)."""
        conn = connect(config.database)
        try:
            synclog = SyncLog(config.database.schema)
            for name, mark in synclog.watermarks(conn).items():
                if name in config.entities:
                    self.metrics.watermark.labels(entity=name).set(mark.timestamp())
            successes = synclog.last_successes(conn)
            for name, when in successes.items():
                if name in config.entities:
                    self.metrics.last_success.labels(entity=name).set(when.timestamp())
            with conn.cursor() as cur:
                for name, entity in config.entities.items():
                    ratio = preload_status(entity, *synclog.preload_state(cur, name))["ratio"]
                    self.metrics.preload_progress.labels(entity=name).set(ratio)
            conn.rollback()
        finally:
            conn.close()
        return successes

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> int:
        assert self.runtime is not None and self.scheduler is not None
        while True:
            self._start_due_jobs()
            try:
                kind, value = self.events.get(timeout=self._wait_time())
            except queue.Empty:
                kind, value = "tick", None
            self.health.heartbeat = self.clock()
            self.notifier.watchdog()
            if kind == "signal":
                if value == signal.SIGHUP:
                    self._reload()
                elif self._begin_stop():
                    return EXIT_OK
            elif kind == "done":
                self._job_done(value)
            elif kind == "run":
                with self.scheduler_lock:
                    self.scheduler.run_now(value)
            drained = not self.running and not self.preload_thread.is_alive()
            if self.stopping and (drained or self.clock() > self.stop_deadline):
                return EXIT_OK

    def _wait_time(self) -> float:
        assert self.scheduler is not None
        wait = MAX_WAIT
        if not self.stopping:
            due = self.scheduler.sleep_for(self.clock(), self.wall())
            if due is not None:
                wait = min(wait, max(0.0, due))
        interval = self.notifier.watchdog_interval
        if interval is not None:
            wait = min(wait, interval)
        return wait

    def _start_due_jobs(self) -> None:
        assert self.runtime is not None and self.scheduler is not None and self.pool is not None
        if self.stopping:
            return
        engine = self.runtime.engine
        with self.scheduler_lock:
            started = self.scheduler.due(self.clock(), self.wall())
        for name in started:
            self.running[name] = self.clock()
            self.pool.submit(self._job, engine, name)
        if started:
            self.notifier.status(self._status_line())

    def _job(self, engine: Engine, name: str) -> None:
        """In a pool thread: one run; its end goes back to the loop."""
        try:
            result = engine.sync_entity(name)
        except BaseException as exc:  # the engine records its own failures; this is a bug
            log.exception("daemon.job_crashed", entity=name)
            result = RunResult(name, error=f"internal error: {exc}")
        self.events.put(("done", result))

    def _job_done(self, result: RunResult) -> None:
        assert self.runtime is not None and self.scheduler is not None
        name = result.entity
        self.running.pop(name, None)
        if name not in self.runtime.config.entities:
            # Removed by a reload while it ran: its run re-created the series.
            self.metrics.forget(name)
            self.last_results.pop(name, None)
        else:
            self.last_results[name] = result
        if not self.stopping:
            with self.scheduler_lock:
                if result.status == "skipped":  # another instance holds the lock
                    self.scheduler.skipped(name, self.clock(), self.wall())
                else:
                    self.scheduler.finished(
                        name, self.clock(), self.wall(), ok=result.status == "ok"
                    )
        self.notifier.status(self._status_line())

    # -- preload -----------------------------------------------------------------

    def _preload_worker(self) -> None:
        """In its own thread: run every configured preload that is not complete, one
        entity at a time, chunk by chunk, beside the incremental schedule (its lock
        is its own). Looks again after a reload, and every PRELOAD_RECHECK seconds
        (another instance may have held the lock)."""
        try:
            while not self.stop_syncs.is_set():
                try:
                    self._preload_pass()
                except psycopg2.Error as exc:  # the database went away: try next time
                    log.warning("preload.pass_failed", error=describe_db_error(exc))
                except Exception:  # a bug: log it loudly, and keep preloading
                    log.exception("preload.crashed")
                self.preload_wake.wait(PRELOAD_RECHECK)
                self.preload_wake.clear()
        finally:
            self.events.put(("preload_done", None))

    def _preload_pass(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        engine = runtime.engine
        preloader = Preloader(
            runtime.config,
            self.metrics,
            client=engine.client,
            stop=self.stop_syncs,
            migration=engine.migration,
            unrecorded=engine.unrecorded,
        )
        for name, entity in runtime.config.entities.items():
            if self.stop_syncs.is_set() or self.runtime is not runtime:
                return  # stopping, or reloaded: the next pass uses the new config
            if not entity.preload.enabled or not self._preload_pending(preloader, entity):
                continue
            self.preloading = name
            try:
                result = preloader.preload_entity(name)
            finally:
                self.preloading = None
            log.info(
                "preload.pass_done",
                entity=name,
                status=result.status,
                chunks_done=result.chunks_done,
                chunks_total=result.chunks_total,
                error=result.error,
            )

    def _preload_pending(self, preloader: Preloader, entity: Entity) -> bool:
        try:
            conn = preloader.connect()
        except psycopg2.Error:
            return True  # the run itself will report the database
        try:
            plan = preloader.progress(conn, entity)
        finally:
            conn.close()
        return plan is None or plan.done < len(plan.chunks)

    # -- reload and stop ---------------------------------------------------------

    def _reload(self) -> None:
        """SIGHUP. Whatever goes wrong, the loop goes on: a file with problems, or an
        unexpected error, is a refused reload and the old configuration runs on."""
        assert self.runtime is not None
        self.notifier.reloading()
        try:
            config = load_config(self.config_path, self.environ)
            migration = self._migrate_for_reload(config)
            self._apply(config, migration)
        except (SyncdError, psycopg2.Error) as exc:
            self._refuse_reload(exc)
        except Exception as exc:  # a bug: loudly, and keep running on the old config
            log.exception("reload.crashed")
            self._refuse_reload(exc)

    def _migrate_for_reload(self, config: Config) -> PendingMigration | None:
        """Migrate for the new file now, or, when the database cannot be reached, a
        migration for the first run that reaches it: an outage is no reason to refuse
        a valid file. Any other database error refuses the reload (raised)."""
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

    def _apply(self, config: Config, migration: PendingMigration | None) -> None:
        assert self.runtime is not None and self.scheduler is not None
        old = self.runtime
        config = self._adopt(config, old.config)
        engine = Engine(
            config,
            self.metrics,
            client=old.engine.client,
            stop=self.stop_syncs,
            migration=migration,
            unrecorded=old.engine.unrecorded,
        )
        ingestor = Ingestor(config, self.metrics, migration=migration)
        successes: dict[str, datetime] = {}
        if migration is None:  # the database answered a moment ago
            try:
                successes = self._seed_metrics(config)  # added entities: watermark, preload
            except psycopg2.Error as exc:
                log.warning("reload.metrics_unseeded", error=describe_db_error(exc))
        with self.scheduler_lock:
            self.scheduler.replace(
                _schedules(config),
                self.clock(),
                self.wall(),
                last_success={name: successes.get(name) for name in config.entities},
                max_concurrent=config.scheduler.max_concurrent,
            )
        self.config = config
        self.runtime = Runtime(config, engine)
        self.preload_wake.set()  # preloads added or changed: with the new config
        old_ingestor, self.ingestor = self.ingestor, ingestor
        if old_ingestor is not None:
            old_ingestor.close()  # pushes under way finish on their own connections
        self.metrics.config_reload_ok.set(1)
        pending = ", migration waits for the database" if migration is not None else ""
        self.notifier.ready(self._status_line("reloaded") + pending)
        log.info("reload.done", entities=list(config.entities), migration_pending=bool(pending))

    def _adopt(self, config: Config, previous: Config) -> Config:
        """`config` as a reload applies it over `previous`: the HTTP port stays bound as
        it is (a new listen address needs a restart), and the metrics follow the
        entities (removed ones forgotten, added ones declared)."""
        if config.http != previous.http:
            log.warning("reload.http_kept", reason="http settings apply at the next restart")
            config = replace(config, http=previous.http)
        for name in set(previous.entities) - set(config.entities):
            self.metrics.forget(name)
        self.metrics.declare(config.entities)
        return config

    def _refuse_reload(self, exc: Exception) -> None:
        if isinstance(exc, ConfigError):
            for problem in exc.problems:
                log.error("reload.refused", problem=problem)
            # STATUS= is cut at 200 characters: say the line and key, not the file path.
            first = exc.problems[0].removeprefix(f"{self.config_path}:")
            more = len(exc.problems) - 1
            reason = f"line {first}" + (f" (and {more} more)" if more else "")
        elif isinstance(exc, psycopg2.Error):
            reason = f"database: {describe_db_error(exc)}"
            log.error("reload.refused", error=reason)
        elif isinstance(exc, SyncdError):
            reason = str(exc)
            log.error("reload.refused", error=reason)
        else:
            reason = f"internal error: {type(exc).__name__}"
            log.error("reload.refused", error=reason)
        self.metrics.config_reload_ok.set(0)
        self.notifier.ready(f"reload refused, old config kept: {reason}")

    def _begin_stop(self) -> bool:
        """First stop signal: drain. Second: True, exit now."""
        if self.stopping:
            log.warning("daemon.stop_now", running=list(self.running))
            return True
        self.stopping = True
        self.stop_syncs.set()
        if self.runtime is not None:
            # A stop never waits for a source: requests in flight are cut now (their
            # runs end failed, their pages uncommitted, the watermark where it was).
            self.runtime.engine.client.cancel_all()
        self.preload_wake.set()  # the preload thread may be waiting for work
        self.notifier.stopping()
        log.info("daemon.stopping", running=list(self.running))
        self.stop_deadline = self.clock() + STOP_GRACE
        return False

    def _shutdown(self, status: int) -> None:
        if self.server is not None:
            self.server.shutdown()
        if self.ingestor is not None:
            self.ingestor.close()
        if self.running or self.preload_thread.is_alive():
            # Asked twice, or the grace time ran out. Leaving now is safe: an
            # uncommitted page is rolled back by PostgreSQL and its watermark never
            # moved. os._exit, because the interpreter would otherwise wait for the
            # pool's threads at exit.
            log.warning(
                "daemon.stopped_with_running_syncs",
                running=sorted(self.running),
                preloading=self.preloading,
            )
            os._exit(status)
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        log.info("daemon.stopped")

    # -- what the HTTP thread asks (App protocol) --------------------------------

    def alive(self) -> bool:
        return self.clock() - self.health.heartbeat < 2 * MAX_WAIT + 10

    def ready(self) -> tuple[bool, str]:
        runtime = self.runtime
        if self.stopping:
            return False, "stopping"
        if runtime is None:
            return self.health.ready  # starting, or why the database is not there yet
        # One database check at a time; the callers waiting meanwhile take its answer.
        with self.ready_lock:
            now = self.clock()
            if now - self.health.ready_at > READY_CACHE:
                self.health.ready = _database_answers(runtime.config)
                self.health.ready_at = self.clock()
            return self.health.ready

    def status(self) -> list[dict[str, Any]]:
        runtime = self.runtime
        if runtime is None:
            raise Unavailable(self._starting())
        try:
            conn = connect(runtime.config.database)
            try:
                report = entity_status(conn, runtime.config, self.wall())
            finally:
                conn.close()
        except psycopg2.Error as exc:
            raise Unavailable(f"database: {describe_db_error(exc)}") from None
        with self.scheduler_lock:
            snapshot = self.scheduler.snapshot() if self.scheduler else []
        plans = {item["name"]: item for item in snapshot}
        for item in report:
            plan = plans.get(item["entity"], {})
            item["running"] = item["entity"] in self.running
            item["next_run"] = plan.get("next_run")
        return report

    def trigger(self, entity: str) -> bool:
        config = self.config
        if config is None or entity not in config.entities:
            return False
        if self.runtime is None:
            raise Unavailable(self._starting())
        self.events.put(("run", entity))
        return True

    def post_routes(self) -> Mapping[str, PostHandler]:
        # Kept while draining: a push is short, and a 404 would tell its client the
        # path is gone for good.
        ingestor = self.ingestor
        if ingestor is not None:
            return ingestor.routes()
        if self.config is None:
            return {}
        # Starting: the paths exist, but nothing can be stored yet (503, retry).
        return {path: self._refuse_push for path in ingest_paths(self.config)}

    def _refuse_push(self, entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        raise Unavailable(self._starting())

    def _starting(self) -> str:
        ok, reason = self.health.ready
        return "starting" if ok else f"starting: {reason}"

    # -- STATUS= -----------------------------------------------------------------

    def _status_line(self, prefix: str = "ready") -> str:
        runtime = self.runtime
        count = len(runtime.config.entities) if runtime else 0
        failed = sorted(n for n, r in self.last_results.items() if r.status == "failed")
        parts = [f"{prefix}: {count} entities", f"{len(self.running)} running"]
        if self.preloading:
            parts.append(f"preloading {self.preloading}")
        if failed:
            parts.append(f"failing: {', '.join(failed)}")
        return ", ".join(parts)


def _database_answers(config: Config) -> tuple[bool, str]:
    try:
        conn = connect(config.database)
    except psycopg2.Error as exc:
        return False, f"database: {describe_db_error(exc)}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return True, "ready"
    except psycopg2.Error as exc:
        return False, f"database: {describe_db_error(exc)}"
    finally:
        conn.close()


def _schedules(config: Config) -> dict[str, Schedule]:
    return {name: entity.schedule for name, entity in config.entities.items()}
