"""What the daemon's loop writes and the HTTP thread reads.

The loop is the only writer. Values are swapped whole (a reload builds a new
`Runtime` and assigns it), so a reader takes one reference and uses it; only the
scheduler, which the loop changes in place, is read under `scheduler_lock`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from syncd.config.model import Config
from syncd.db.schema import PendingMigration
from syncd.ingest.ingestor import Ingestor
from syncd.metrics import Metrics
from syncd.service.scheduler import Scheduler
from syncd.sync.incremental import Engine
from syncd.sync.recording import Unrecorded
from syncd.sync.source import SourceClient

MAX_WAIT = 5.0  # seconds: the loop ticks (heartbeat, watchdog, STATUS=) at least this often


@dataclass
class Runtime:
    """What a reload swaps: new runs use the new engine; running ones keep theirs."""

    config: Config
    engine: Engine


class EngineFactory(Protocol):
    """How the daemon builds the engine of a configuration (`Engine` itself, but for
    tests); a reload passes the client and the unrecorded ends of the old one."""

    def __call__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        client: SourceClient | None = None,
        stop: threading.Event | None = None,
        migration: PendingMigration | None = None,
        unrecorded: Unrecorded | None = None,
    ) -> Engine: ...


@dataclass
class Health:
    """Plain values for /healthz and /readyz."""

    heartbeat: float = field(default_factory=time.monotonic)  # the loop's last tick
    ready_at: float = float("-inf")  # when `ready` was last checked against the database
    ready: tuple[bool, str] = (False, "starting")


@dataclass
class ServiceState:
    """The daemon's shared state; see the module docstring for who writes what."""

    health: Health = field(default_factory=Health)
    config: Config | None = None  # once loaded; `runtime` once the database answered
    runtime: Runtime | None = None
    ingestor: Ingestor | None = None
    scheduler: Scheduler | None = None
    scheduler_lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, float] = field(default_factory=dict)  # entity -> monotonic start
    stopping: bool = False
