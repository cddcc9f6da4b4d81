"""Why a push was not stored, in the domain's terms.

The ingest package knows nothing of HTTP: `syncd.service.ingest_routes` maps each of
these to its answer. `str()` of an error is one line a client may read (never SQL,
never record contents); `run_id` is the `sync_time` row the push got as far as, if any.
"""

from __future__ import annotations


class IngestError(Exception):
    """A push that was not stored: the database refused it, or a bug."""

    def __init__(self, message: str, run_id: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class BadBody(IngestError):
    """The pushed body is not a JSON array of records; nothing was stored."""


class UnknownEntity(IngestError):
    """The push names no configured entity; nothing was stored."""


class Busy(IngestError):
    """Nothing stored; the same push can be sent again later (every connection in use,
    rows held by another writer, or the database away)."""
