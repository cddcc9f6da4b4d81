"""syncd's Prometheus metrics (listed in docs/operations.md, "Metrics"), on a registry
passed in.

Every family exists from the start with a series for every configured entity, so a
dashboard shows zeros instead of "no data" and `rate()` has a starting point."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from syncd import __version__
from syncd.runs import FINAL_STATUSES, RunKind, SkipReason

KINDS = tuple(RunKind)
RUN_STATUSES = FINAL_STATUSES  # a run is counted when it ends

# Sync runs take from milliseconds (nothing new) to hours (a large backfill chunk).
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def disable_created_series() -> None:
    """Export no `*_created` series, in the text format and in OpenMetrics alike: they
    add a series beside every counter and histogram series and tell nothing a dashboard or
    alert uses.

    prometheus_client keeps this switch in one global, read at every scrape: it is the
    process's choice, made once by its entry point (`syncd.cli.main.main`), not by
    each `Metrics` built (tests build many, in one process)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, process: bool = False) -> None:
        """`process=True` (the daemon) adds the process_* and python_* collectors:
        CPU, memory, open files, start time (a restart shows as its change)."""
        self.registry = registry
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            registry.register(GC_COLLECTOR)
        self.runs = Counter(
            "syncd_sync_runs",
            "Sync runs by outcome.",
            ["entity", "kind", "status"],
            registry=registry,
        )
        self.skipped = Counter(
            "syncd_sync_skipped",
            "Scheduled runs that did nothing: another instance held the entity's lock"
            " (reason=locked) or had already run it in this interval or slot (served).",
            ["entity", "reason"],
            registry=registry,
        )
        self.fetched = Counter(
            "syncd_records_fetched",
            "Records received from the source.",
            ["entity"],
            registry=registry,
        )
        self.written = Counter(
            "syncd_records_written",
            "Rows inserted or changed in PostgreSQL.",
            ["entity"],
            registry=registry,
        )
        self.rejected = Counter(
            "syncd_records_rejected",
            "Records sent to sync_rejects.",
            ["entity"],
            registry=registry,
        )
        self.duration = Histogram(
            "syncd_sync_duration_seconds",
            "Duration of sync runs.",
            ["entity", "kind"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "syncd_source_requests",
            "Requests to the source by HTTP status ('error': no answer).",
            ["entity", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "syncd_source_request_duration_seconds",
            "Duration of requests to the source.",
            ["entity"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.watermark = Gauge(
            "syncd_watermark_timestamp_seconds",
            "The entity's watermark as a Unix time.",
            ["entity"],
            registry=registry,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the entity's last run succeeded.",
            ["entity"],
            registry=registry,
        )
        self.preload_progress = Gauge(
            "syncd_preload_progress_ratio",
            "Share of the entity's preload chunks done (0 to 1).",
            ["entity"],
            registry=registry,
        )
        self.config_reload_ok = Gauge(
            "syncd_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
            registry=registry,
        )
        self.schedule_lag = Gauge(
            "syncd_schedule_lag_seconds",
            "Seconds the longest-waiting due entity has waited for a free run slot in this"
            " instance (0: none waits). Growing: raise max_concurrent or add an instance.",
            registry=registry,
        )
        self.build_info = Gauge(
            "syncd_build_info",
            "The running syncd's version; always 1.",
            ["version"],
            registry=registry,
        )
        self._codes: dict[str, set[str]] = {}  # status codes seen per entity, for forget()
        self.build_info.labels(version=__version__).set(1)
        self.config_reload_ok.set(1)

    def declare(self, entities: Iterable[str]) -> None:
        """Create every per-entity series at zero."""
        for entity in entities:
            for kind in KINDS:
                for status in RUN_STATUSES:
                    self.runs.labels(entity=entity, kind=kind, status=status)
            # One duration series per entity from the start; those of the other kinds
            # appear with their first run (a histogram child costs ~4 KB, and most
            # entities of a large configuration are never preloaded or pushed to).
            self.duration.labels(entity=entity, kind=RunKind.INCREMENTAL)
            for reason in SkipReason:
                self.skipped.labels(entity=entity, reason=reason)
            for family in (self.fetched, self.written, self.rejected):
                family.labels(entity=entity)
            self.request_duration.labels(entity=entity)
            # A series from the start (code 200, at 0) so rate() has a starting point.
            self.requests.labels(entity=entity, code="200")
            self._codes.setdefault(entity, set()).add("200")
            self.watermark.labels(entity=entity)
            self.last_success.labels(entity=entity)
            self.preload_progress.labels(entity=entity)

    def forget(self, entity: str) -> None:
        """Drop an entity's series (removed from the configuration by a reload), so no
        stale series lingers for alerts to fire on."""
        for kind in KINDS:
            for status in RUN_STATUSES:
                self.runs.remove(entity, kind, status)
            with contextlib.suppress(KeyError):  # never run: never created
                self.duration.remove(entity, kind)
        for code in self._codes.pop(entity, set()):
            self.requests.remove(entity, code)
        for reason in SkipReason:
            self.skipped.remove(entity, reason)
        for family in (
            self.fetched,
            self.written,
            self.rejected,
            self.request_duration,
            self.watermark,
            self.last_success,
            self.preload_progress,
        ):
            family.remove(entity)

    def observe_request(self, entity: str, code: str, seconds: float) -> None:
        self._codes.setdefault(entity, set()).add(code)
        self.requests.labels(entity=entity, code=code).inc()
        self.request_duration.labels(entity=entity).observe(seconds)
