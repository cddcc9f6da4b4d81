"""`syncd preload ENTITY [--from TS] [--to TS] [--chunk STEP]`: a preload by hand,
with a progress display (progress.py), stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from prometheus_client import CollectorRegistry

from syncd import logs
from syncd.cli.main import check_entities
from syncd.cli.progress import Progress
from syncd.config.model import CalendarStep, Config
from syncd.config.values import parse_calendar_step, parse_timestamp
from syncd.db.connection import connect
from syncd.db.schema import migrate
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED, UsageError
from syncd.metrics import Metrics
from syncd.sync.chunks import Chunk
from syncd.sync.preload import Preloader, PreloadPlan, PreloadResult
from syncd.sync.runner import RunResult


def _arguments(
    config: Config, name: str, start: str | None, end: str | None, chunk: str | None
) -> tuple[datetime | None, datetime | None, CalendarStep | None]:
    tz = config.entities[name].source.timezone
    try:
        first = parse_timestamp(start, tz) if start else None
        last = parse_timestamp(end, tz) if end else None
        step = parse_calendar_step(chunk) if chunk else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if last is not None and first is None:
        raise UsageError("--to needs --from: the configured preload always ends at E")
    return first, last, step


def run_preload(
    config: Config, name: str, start: str | None, end: str | None, chunk: str | None
) -> int:
    check_entities(config, [name])
    first, last, step = _arguments(config, name, start, end, chunk)
    conn = connect(config.database)
    try:
        migrate(conn, config)
    finally:
        conn.close()
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, _stop_once(stop))
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    preloader = Preloader(config, metrics, stop=stop)
    shown: list[Progress] = []
    tty = sys.stdout.isatty()
    if tty:
        logs.configure(quiet=True)  # log lines would tear the progress bar apart

    def on_plan(plan: PreloadPlan) -> None:
        shown.append(
            Progress(
                len(plan.chunks),
                sys.stdout,
                label=name,
                done=plan.done,
                tz=config.entities[name].source.timezone,
            )
        )

    def on_chunk(chunk: Chunk, run: RunResult) -> None:
        shown[0].chunk_done(chunk.start, chunk.end, run.fetched)

    try:
        result = preloader.preload_entity(
            name, start=first, end=last, chunk=step, on_plan=on_plan, on_chunk=on_chunk
        )
    finally:
        for progress in shown:
            progress.close()
        signal.signal(signal.SIGINT, previous)
    print(summary_line(result))
    return EXIT_OK if result.status in ("ok", "skipped") else EXIT_RUN_FAILED


def _stop_once(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """First Ctrl-C: finish the page being written, commit, stop. Second: at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return handler


def summary_line(result: PreloadResult) -> str:
    counts = (
        f"{result.chunks_done} chunks done of {result.chunks_total}, {result.fetched} fetched, "
        f"{result.written} written, {result.rejected} rejected, {result.seconds:.1f}s"
    )
    if result.status == "skipped":
        return f"{result.entity}: preload skipped: another syncd instance is preloading it"
    if result.status == "ok":
        return f"{result.entity}: preload ok: {counts}"
    if result.status == "stopped":
        return f"{result.entity}: preload stopped: {counts}; run it again to continue"
    return f"{result.entity}: preload failed: {result.error} ({counts})"
