"""What every part of the running service is handed: where the configuration file is,
the process's environment, the state the loop shares with the HTTP thread, the
metrics, systemd, the service's database calls and the two clocks.

One frozen value instead of the same eight arguments to each part (the start-up
wait, the reloader, the loop); tests build it with fakes where the daemon builds it
with the real things.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from syncd.metrics import Metrics
from syncd.service.database import ServiceDatabase
from syncd.service.state import ServiceState
from syncd.service.systemd import Notifier


@dataclass(frozen=True)
class ServiceContext:
    config_path: str
    environ: Mapping[str, str]
    state: ServiceState
    metrics: Metrics
    notifier: Notifier
    database: ServiceDatabase
    clock: Callable[[], float]  # monotonic seconds: schedules, deadlines, the heartbeat
    wall: Callable[[], datetime]  # aware UTC: what is shown and stored
