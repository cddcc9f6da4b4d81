"""Text and JSON values PostgreSQL can store, whatever a source or a client sent.

JSON can carry what PostgreSQL refuses: text cannot hold NUL (`\\u0000`), neither text
nor jsonb a lone surrogate (`"\\ud800"` decodes to one), jsonb no NaN or infinity.
A reject, and the error of a run, must land whatever the record held, so these are
written out visibly instead: NUL as the six characters `\\u0000`, a lone surrogate as
`\\udXXX`, a non-finite number as its name, and a value nested deeper than
`MAX_DEPTH` as a note saying so. The stored copy is then a faithful picture of what
arrived, not the bytes themselves.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 100  # levels of a rejected record kept in sync_rejects; deeper is cut
CUT = f"(nested deeper than {MAX_DEPTH} levels: cut)"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates written out as `\\uXXXX`."""
    if text.isascii() and "\x00" not in text:  # the usual case, and a cheap test
        return text
    return _UNSTORABLE.sub(_escape, text)


def storable_error(text: str | None) -> str | None:
    return None if text is None else storable_text(text)


def storable_json(value: Any, depth: int = 0) -> Any:
    """`value` (decoded JSON) in a form jsonb accepts: see the module docstring."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(item, depth + 1) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):  # beyond 4300 digits Python refuses to print it
        return value if value.bit_length() < 14_000 else "(an integer of over 4000 digits)"
    return storable_text(str(value))  # anything else decoding may give: as text
