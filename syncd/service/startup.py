"""The daemon's start, between binding the HTTP port and READY=1: wait for the
database and migrate (docs/operations.md, "Running under systemd").

systemd is kept waiting (EXTEND_TIMEOUT_USEC) rather than killing syncd at its
start timeout: READY=1 means ready, and a database that comes back is used as soon
as it answers. Meanwhile the loop is not running, so this wait feeds the heartbeat
(/healthz) and the watchdog itself, and takes the signals: SIGHUP re-reads the file
(an operator fixing the DSN or the password file), SIGTERM/SIGINT stop the start.
"""

from __future__ import annotations

import psycopg2
import structlog

from syncd.config.loader import load_config
from syncd.config.model import Config
from syncd.db.connection import describe_db_error
from syncd.errors import ConfigError
from syncd.service.context import ServiceContext
from syncd.service.events import Inbox, ReloadRequested, Signal, StopRequested
from syncd.service.reload import adopt, log_config_problems
from syncd.service.state import MAX_WAIT

log = structlog.get_logger("syncd.service.startup")

DB_WAIT_MAX = 30.0  # seconds between tries while the database is not there at start


class DatabaseWait:
    """Waits for the database before READY=1 (see the module's docstring)."""

    def __init__(self, context: ServiceContext, inbox: Inbox) -> None:
        self._context = context
        self._inbox = inbox

    def until_prepared(self, config: Config) -> Config | None:
        """Migrate once the database answers; returns the configuration to start with
        (a SIGHUP meanwhile re-reads the file), or None if a stop signal came first.
        Raises SyncdError when a table contradicts the configuration."""
        delay = 1.0
        while True:
            # Each try takes at most connect_timeout (10 s) plus the wait after it.
            self._context.notifier.extend_timeout(DB_WAIT_MAX + 40)
            try:
                self._context.database.prepare(config)
                return config
            except psycopg2.Error as exc:
                reason = describe_db_error(exc)
                log.warning("daemon.database_unavailable", error=reason, retry_in=delay)
                self._context.state.health.ready = (False, f"waiting for the database: {reason}")
                self._context.notifier.status(f"waiting for the database: {reason}")
            match self._wait_for_signal(delay):
                case ReloadRequested():
                    config = self._reread(config)
                    delay = 1.0  # a fixed DSN or password is tried at once
                case StopRequested():
                    return None
                case None:
                    delay = min(delay * 2, DB_WAIT_MAX)

    def _reread(self, config: Config) -> Config:
        """SIGHUP before READY=1: the new file, if valid, is used from the next try;
        else the one in use stays."""
        try:
            new = load_config(self._context.config_path, self._context.environ)
        except ConfigError as exc:
            log_config_problems(exc)
            self._context.metrics.config_reload_ok.set(0)
            return config
        new = adopt(new, config, self._context.metrics)
        self._context.metrics.config_reload_ok.set(1)
        self._context.state.config = new
        log.info("reload.done", entities=list(new.entities), while_starting=True)
        return new

    def _wait_for_signal(self, seconds: float) -> Signal | None:
        """Wait up to `seconds` for a signal, feeding the heartbeat and the watchdog
        at least every MAX_WAIT seconds; a stop also sends STOPPING=1."""
        deadline = self._context.clock() + seconds
        while (left := deadline - self._context.clock()) > 0:
            self._context.state.health.heartbeat = self._context.clock()
            self._context.notifier.watchdog()
            timeout = min(left, MAX_WAIT, self._context.notifier.watchdog_interval or MAX_WAIT)
            match self._inbox.get(timeout):
                case StopRequested() as stop:
                    self._context.notifier.stopping()
                    return stop
                case ReloadRequested() as reload:
                    return reload
                case _:
                    continue  # nothing else comes before READY=1
        self._context.state.health.heartbeat = self._context.clock()
        return None
