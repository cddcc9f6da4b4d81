"""Structured logs: JSON lines for journald and files, readable lines on a terminal.

Every event of a run carries `entity` and `run_id` (bound as contextvars by the
engine). No secret is ever logged: config secrets are `Secret` objects whose repr is
masked, and as a second guard any field named like a credential is masked here."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_WORDS = ("password", "api_key", "apikey", "secret", "token", "authorization")


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


# sd-daemon(3): a line written to a journal stream may start with its syslog priority.
_PRIORITIES = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "info": 6, "debug": 7}


def is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is connected to the journal: systemd sets $JOURNAL_STREAM to
    the device and inode of the stream it gave the service, and `stream` is that one
    (not a file or pipe the output was redirected to)."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):  # unset or malformed, or a stream without a descriptor
        return False


class _WithPriority:
    """A renderer whose lines start with `<N>`, the event's syslog priority, so that
    the journal files errors as errors (`journalctl -p err`)."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        priority = _PRIORITIES.get(str(event.get("level", name)), 6)
        return f"<{priority}>{self.renderer(logger, name, event)}"


def print_error(text: str, stream: TextIO | None = None) -> None:
    """One line for a person on stderr (a command's error), marked as an error for the
    journal when stderr is the journal."""
    out = stream or sys.stderr
    print(f"<3>{text}" if is_journal(out) else text, file=out, flush=True)


def configure(
    *,
    debug: bool = False,
    quiet: bool = False,
    stream: TextIO | None = None,
    json: bool | None = None,
) -> None:
    """Set up structlog for the whole process. `json=None` picks by whether `stream`
    is a terminal."""
    out = stream or sys.stderr
    as_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    if is_journal(out):
        renderer = _WithPriority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask_secrets,
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
        ),
        # Resolved at each use, not now: tests and daemons may swap sys.stderr later.
        logger_factory=lambda *_: structlog.PrintLogger(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
