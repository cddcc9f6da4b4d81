"""What the HTTP server asks the daemon (the `App` protocol of syncd.http.server):
liveness, readiness, the status report, manual runs and the ingest routes.

Called from the server's threads. It reads the state the loop writes and puts
events on the loop's queue; it never changes the state itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import psycopg2

from syncd.db.connection import database_failure
from syncd.http.server import PostHandler, Unavailable
from syncd.service.database import ServiceDatabase
from syncd.service.events import Inbox, RunRequested
from syncd.service.ingest_routes import ingest_paths, ingest_routes
from syncd.service.state import MAX_WAIT, ServiceState

READY_CACHE = 2.0  # seconds a /readyz database check is reused
ALIVE_WITHIN = 2 * MAX_WAIT + 10  # seconds since the loop's last tick for /healthz


class ServiceApp:
    def __init__(
        self,
        state: ServiceState,
        inbox: Inbox,
        database: ServiceDatabase,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
    ) -> None:
        self._state = state
        self._inbox = inbox
        self._database = database
        self._clock = clock
        self._wall = wall
        self._ready_lock = threading.Lock()

    def alive(self) -> bool:
        """/healthz: the loop ticked recently (a stuck loop fails it)."""
        return self._clock() - self._state.health.heartbeat < ALIVE_WITHIN

    def ready(self) -> tuple[bool, str]:
        """/readyz. Single flight: one database check at a time, reused for
        READY_CACHE seconds; the callers waiting meanwhile take its answer."""
        state = self._state
        runtime = state.runtime
        if state.stopping:
            return False, "stopping"
        if runtime is None:
            return state.health.ready  # starting, or why the database is not there yet
        with self._ready_lock:
            if self._clock() - state.health.ready_at > READY_CACHE:
                state.health.ready = self._database.answers(runtime.config)
                state.health.ready_at = self._clock()
            return state.health.ready

    def status(self) -> list[dict[str, Any]]:
        """/status: the database's report per entity, with the schedule's view."""
        state = self._state
        runtime = state.runtime
        if runtime is None:
            raise Unavailable(self._starting())
        try:
            report = self._database.entity_status(runtime.config, self._wall())
        except psycopg2.Error as exc:
            raise Unavailable(database_failure(exc)) from None
        with state.scheduler_lock:
            snapshot = state.scheduler.snapshot() if state.scheduler else []
        plans = {item["name"]: item for item in snapshot}
        for item in report:
            plan = plans.get(item["entity"], {})
            item["running"] = item["entity"] in state.running
            item["next_run"] = plan.get("next_run")
        return report

    def trigger(self, entity: str) -> bool:
        """POST /v1/sync/{entity}: queue a manual run for the loop."""
        config = self._state.config
        if config is None or entity not in config.entities:
            return False
        if self._state.runtime is None:
            raise Unavailable(self._starting())
        self._inbox.put(RunRequested(entity))
        return True

    def post_routes(self) -> Mapping[str, PostHandler]:
        # Kept while draining: a push is short, and a 404 would tell its client the
        # path is gone for good.
        ingestor = self._state.ingestor
        if ingestor is not None:
            return ingest_routes(ingestor, ingestor.config)
        config = self._state.config
        if config is None:
            return {}
        # Starting: the paths exist, but nothing can be stored yet (503, retry).
        return {path: self._refuse_push for path in ingest_paths(config)}

    def _refuse_push(self, entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        raise Unavailable(self._starting())

    def _starting(self) -> str:
        ok, reason = self._state.health.ready
        return "starting" if ok else f"starting: {reason}"
