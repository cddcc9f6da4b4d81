"""A pushed body as the list of records it holds."""

from __future__ import annotations

from typing import Any

from syncd.ingest.errors import BadBody
from syncd.sync import jsonrecords


def parse_records(body: bytes) -> list[Any]:
    """The JSON array of records in a request body; BadBody says what is wrong.
    A record the decoder cannot read alone is one reject, not a bad body (see
    `syncd.sync.jsonrecords`)."""
    try:
        return jsonrecords.records_in(body, constants=False)
    except jsonrecords.BadBody as exc:
        raise BadBody(str(exc)) from None
