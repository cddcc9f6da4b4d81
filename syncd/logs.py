"""Structured logs: JSON lines for journald and files, readable lines on a terminal.

Every event of a run carries `entity` and `run_id` (bound as contextvars by the
engine). No secret is ever logged: config secrets are `Secret` objects whose repr is
masked, and as a second guard any field named like a credential is masked here."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_WORDS = ("password", "api_key", "apikey", "secret", "token", "authorization")


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_WORDS):
            event[key] = "***"
    return event


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
