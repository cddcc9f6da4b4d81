"""Reloading the configuration (SIGHUP; docs/operations.md, "Running under systemd").

`Reloader` is the loop's reload: the new file applied over the running one, or
refused with the old one kept. `adopt` (how a new file is taken over the one in use)
and the refusal's log lines also serve a SIGHUP that comes before READY=1
(syncd.service.startup).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import psycopg2
import structlog

from syncd.config.loader import load_config
from syncd.config.model import Config
from syncd.db.connection import database_failure, describe_db_error
from syncd.db.schema import PendingMigration
from syncd.errors import ConfigError, SyncdError
from syncd.ingest.ingestor import Ingestor
from syncd.metrics import Metrics
from syncd.service.context import ServiceContext
from syncd.service.preloads import PreloadThread
from syncd.service.scheduler import schedules
from syncd.service.state import EngineFactory, Runtime

log = structlog.get_logger("syncd.service.reload")


def adopt(config: Config, previous: Config, metrics: Metrics) -> Config:
    """`config` as a reload applies it over `previous`: the HTTP port stays bound as it
    is (a new listen address needs a restart), and the metrics follow the entities
    (removed ones forgotten, added ones declared)."""
    if config.http != previous.http:
        log.warning("reload.http_kept", reason="http settings apply at the next restart")
        config = replace(config, http=previous.http)
    for name in set(previous.entities) - set(config.entities):
        metrics.forget(name)
    metrics.declare(config.entities)
    return config


def log_config_problems(exc: ConfigError) -> None:
    """Each problem of a refused file, one log line each."""
    for problem in exc.problems:
        log.error("reload.refused", problem=problem)


def refusal_reason(exc: Exception, config_path: str) -> str:
    """Log why a reload was refused; returns the reason for the STATUS= line, which
    is cut at 200 characters: it names the line and key, not the file's path."""
    if isinstance(exc, ConfigError):
        log_config_problems(exc)
        first = exc.problems[0].removeprefix(f"{config_path}:")
        more = len(exc.problems) - 1
        return f"line {first}" + (f" (and {more} more)" if more else "")
    if isinstance(exc, psycopg2.Error):
        reason = database_failure(exc)
    elif isinstance(exc, SyncdError):
        reason = str(exc)
    else:
        reason = f"internal error: {type(exc).__name__}"
    log.error("reload.refused", error=reason)
    return reason


class Reloader:
    """SIGHUP while the loop runs: `RELOADING=1`, then the new file applied or refused,
    then `READY=1` either way. Called by the loop, in the loop's thread."""

    def __init__(
        self,
        context: ServiceContext,
        *,
        engine_factory: EngineFactory,
        stop: threading.Event,
        preloads: PreloadThread,
        status_line: Callable[[str], str],
    ) -> None:
        self._context = context
        self._engine_factory = engine_factory
        self._stop = stop
        self._preloads = preloads
        self._status_line = status_line

    def reload(self) -> None:
        """Whatever goes wrong, the loop goes on: a file with problems, or an
        unexpected error, is a refused reload and the old configuration runs on."""
        self._context.notifier.reloading()
        try:
            config = load_config(self._context.config_path, self._context.environ)
            migration = self._context.database.migrate_for_reload(config)
            self._apply(config, migration)
        except (SyncdError, psycopg2.Error) as exc:
            self._refuse(exc)
        except Exception as exc:  # a bug: loudly, and keep running on the old config
            log.exception("reload.crashed")
            self._refuse(exc)

    def _apply(self, config: Config, migration: PendingMigration | None) -> None:
        """Swap the engine, the ingestor and the schedules; running syncs finish with
        the engine they started with, and the scheduler never cuts them short."""
        state = self._context.state
        assert state.runtime is not None and state.scheduler is not None
        old = state.runtime
        config = adopt(config, old.config, self._context.metrics)
        engine = self._engine_factory(
            config,
            self._context.metrics,
            client=old.engine.client,
            stop=self._stop,
            migration=migration,
            unrecorded=old.engine.unrecorded,
        )
        ingestor = Ingestor(config, self._context.metrics, migration=migration)
        successes: dict[str, datetime] = {}
        if migration is None:  # the database answered a moment ago
            try:
                # Added entities: their watermark and preload gauges.
                successes = self._context.database.seed_metrics(config, self._context.metrics)
            except psycopg2.Error as exc:
                log.warning("reload.metrics_unseeded", error=describe_db_error(exc))
        with state.scheduler_lock:
            state.scheduler.replace(
                schedules(config),
                self._context.clock(),
                self._context.wall(),
                last_success={name: successes.get(name) for name in config.entities},
                max_concurrent=config.scheduler.max_concurrent,
            )
        state.config = config
        state.runtime = Runtime(config, engine)
        self._preloads.wake()  # preloads added or changed: with the new config
        old_ingestor, state.ingestor = state.ingestor, ingestor
        if old_ingestor is not None:
            old_ingestor.close()  # pushes under way finish on their own connections
        self._context.metrics.config_reload_ok.set(1)
        pending = ", migration waits for the database" if migration is not None else ""
        self._context.notifier.ready(self._status_line("reloaded") + pending)
        log.info("reload.done", entities=list(config.entities), migration_pending=bool(pending))

    def _refuse(self, exc: Exception) -> None:
        reason = refusal_reason(exc, self._context.config_path)
        self._context.metrics.config_reload_ok.set(0)
        self._context.notifier.ready(f"reload refused, old config kept: {reason}")
