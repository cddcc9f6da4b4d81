"""`syncd preload ENTITY [--from TS] [--to TS] [--chunk STEP]`: a preload by hand,
with a progress display (progress.py), stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from syncd import logs
from syncd.cli.common import check_entities, command_metrics, migrate_first
from syncd.cli.progress import Progress
from syncd.config.model import CalendarStep, Config
from syncd.config.values import parse_calendar_step, parse_timestamp
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED, UsageError
from syncd.sync.preload import Preloader, PreloadPlan, PreloadResult
from syncd.sync.results import RunOutcome, RunResult
from syncd.sync.spans import Span


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
    migrate_first(config)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, _stop_once(stop))
    preloader = Preloader(config, command_metrics(config), stop=stop)
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

    def on_page(records: int) -> None:
        shown[0].records(records)  # the bar's counts move within a chunk

    def on_chunk(chunk: Span, run: RunResult) -> None:
        shown[0].chunk_done(chunk.start, chunk.end, run.fetched)

    try:
        result = preloader.preload_entity(
            name,
            start=first,
            end=last,
            chunk=step,
            on_plan=on_plan,
            on_chunk=on_chunk,
            on_page=on_page,
        )
    finally:
        for progress in shown:
            progress.close()
        signal.signal(signal.SIGINT, previous)
    print(preload_summary(result))
    return EXIT_OK if result.outcome in (RunOutcome.OK, RunOutcome.SKIPPED) else EXIT_RUN_FAILED


def _stop_once(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """First Ctrl-C: finish the page being written, commit, stop. Second: at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return handler


def preload_summary(result: PreloadResult) -> str:
    """The line `syncd preload` prints at the end."""
    counts = (
        f"{result.chunks_done} chunks done of {result.chunks_total}, {result.fetched} fetched, "
        f"{result.written} written, {result.rejected} rejected, {result.seconds:.1f}s"
    )
    if result.outcome == RunOutcome.SKIPPED:
        return f"{result.entity}: preload skipped: another syncd instance is preloading it"
    if result.outcome == RunOutcome.OK:
        return f"{result.entity}: preload ok: {counts}"
    if result.outcome == RunOutcome.STOPPED:
        return f"{result.entity}: preload stopped: {counts}; run it again to continue"
    return f"{result.entity}: preload failed: {result.error} ({counts})"
