"""The daemon's background preloads: one thread that runs every configured preload
that is not complete, one entity at a time, chunk by chunk, beside the incremental
schedule (a preload's lock is its own; see docs/operations.md, "Preload (history
backfill)").

It looks at every configured preload after a reload (`wake`) and every
PRELOAD_RECHECK seconds; a preload whose lock another instance held is looked at
again every LOCKED_RECHECK seconds (only those: one lock try each). Planning is done
under that lock, so two instances never plan the same chunk, and when the holder
dies its preload resumes here from the last chunk it committed, within seconds. It
stops between pages once `stop` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2
import structlog

from syncd.config.model import Entity
from syncd.db.connection import describe_db_error
from syncd.metrics import Metrics
from syncd.runs import SkipReason
from syncd.service.state import Runtime
from syncd.sync.preload import Preloader

log = structlog.get_logger("syncd.service.preloads")

PRELOAD_RECHECK = 60.0  # seconds between looks for preloads left to do
# ... when another instance held one: a lock try per such entity (one at a time per
# instance) every few seconds is cheap, and is what bounds a takeover.
LOCKED_RECHECK = 5.0


class PreloadThread:
    def __init__(
        self,
        runtime: Callable[[], Runtime | None],
        metrics: Metrics,
        stop: threading.Event,
        on_exit: Callable[[], None],
    ) -> None:
        """`runtime` returns the configuration and engine in use (a reload swaps
        them); `on_exit` is called in the thread when it returns."""
        self._runtime = runtime
        self._metrics = metrics
        self._stop = stop
        self._on_exit = on_exit
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.preloading: str | None = None  # the entity being preloaded, for STATUS=

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="preload", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look again now: preloads were added or changed, or the daemon is stopping."""
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        held: set[str] = set()  # preloads another instance was running at the last look
        next_full = 0.0  # monotonic: when every configured preload is looked at again
        try:
            while not self._stop.is_set():
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + PRELOAD_RECHECK
                try:
                    held = self._pass(None if full else held)
                except psycopg2.Error as exc:  # the database went away: try next time
                    log.warning("preload.pass_failed", error=describe_db_error(exc))
                except Exception:  # a bug: log it loudly, and keep preloading
                    log.exception("preload.crashed")
                wait = LOCKED_RECHECK if held else next_full - time.monotonic()
                if self._wake.wait(max(0.0, wait)):
                    self._wake.clear()
                    next_full = 0.0  # woken (a reload, the stop): look at everything
        finally:
            self._on_exit()

    def _pass(self, only: set[str] | None) -> set[str]:
        """One look at every configured preload (or at those in `only`): those another
        instance was running are returned."""
        held: set[str] = set()
        runtime = self._runtime()
        assert runtime is not None
        engine = runtime.engine
        preloader = Preloader(
            runtime.config,
            self._metrics,
            client=engine.client,
            stop=self._stop,
            migration=engine.migration,
            unrecorded=engine.unrecorded,
        )
        for name, entity in runtime.config.entities.items():
            if self._stop.is_set() or self._runtime() is not runtime:
                return held  # stopping, or reloaded: the next pass uses the new config
            if only is not None and name not in only:
                continue
            if not entity.preload.enabled or not _pending(preloader, entity):
                continue
            self.preloading = name
            try:
                result = preloader.preload_entity(name)
            finally:
                self.preloading = None
            if result.skip_reason is SkipReason.LOCKED:
                held.add(name)  # looked at again in LOCKED_RECHECK: no line each time
                log.debug("preload.held_elsewhere", entity=name)
                continue
            log.info(
                "preload.pass_done",
                entity=name,
                status=result.outcome,
                chunks_done=result.chunks_done,
                chunks_total=result.chunks_total,
                error=result.error,
            )
        return held


def _pending(preloader: Preloader, entity: Entity) -> bool:
    """Whether the entity's configured preload has chunks left (or may have)."""
    try:
        conn = preloader.connect()
    except psycopg2.Error:
        return True  # the run itself will report the database
    try:
        plan = preloader.progress(conn, entity)
    finally:
        conn.close()
    return plan is None or plan.done < len(plan.chunks)
