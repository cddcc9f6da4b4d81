"""What the daemon's loop is told, as typed events on one queue.

Everything outside the loop only puts events here: signal handlers (they must not
exit, log or notify systemd: sdnotify swallows every exception, SystemExit
included), the sync pool's threads when a run ends, the HTTP thread for `POST
/v1/sync/{entity}`, and the preload thread when it ends. The loop takes them one at
a time and decides.
"""

from __future__ import annotations

import queue
import signal
from dataclasses import dataclass
from typing import Protocol

from syncd.sync.results import RunResult


@dataclass(frozen=True)
class ReloadRequested:
    """SIGHUP: read the configuration file again."""


@dataclass(frozen=True)
class StopRequested:
    """SIGTERM or SIGINT: drain and exit (a second one: exit at once)."""

    signum: int


@dataclass(frozen=True)
class RunRequested:
    """`POST /v1/sync/{entity}`: run this entity as soon as a slot is free."""

    entity: str


@dataclass(frozen=True)
class RunFinished:
    """A sync run ended (ok, failed or skipped) in the pool."""

    result: RunResult


@dataclass(frozen=True)
class PreloadsEnded:
    """The preload thread has returned (it only does once the daemon stops)."""


Event = ReloadRequested | StopRequested | RunRequested | RunFinished | PreloadsEnded
Signal = ReloadRequested | StopRequested

HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def event_for_signal(signum: int) -> Signal:
    """The event a handled signal stands for."""
    if signum == signal.SIGHUP:
        return ReloadRequested()
    return StopRequested(signum)


class Inbox(Protocol):
    """The loop's queue: any thread puts, only the loop gets."""

    def put(self, event: Event) -> None: ...

    def get(self, timeout: float) -> Event | None:
        """The next event, or None once `timeout` seconds passed without one."""
        ...


class EventQueue:
    """The production inbox: a thread-safe FIFO (safe to put from a signal handler)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def get(self, timeout: float) -> Event | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
