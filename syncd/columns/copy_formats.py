"""From a stored value (what `syncd.columns.converters` produced) to its text in a COPY line.

One pure function per column type (the registry in `syncd.columns.types` says which
serves which type). Only text and jsonb can hold the characters COPY treats
specially (backslash, tab, newline, carriage return); everything else formats to
plain ASCII. NULL (`\\N`) is the caller's: a formatter never sees None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Formatter = Callable[[Any], str]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = re.compile(r"[\\\t\n\r]")


def text(value: Any) -> str:
    """Any value's str, with COPY's special characters escaped."""
    written = str(value)
    # Most values hold no special character: searching is far cheaper than translating.
    return written.translate(_ESCAPES) if _SPECIAL.search(written) else written


def boolean(value: Any) -> str:
    return "t" if value else "f"


def iso(value: Any) -> str:
    """A date or a datetime, as ISO 8601 (PostgreSQL reads it back exactly)."""
    return str(value.isoformat())


def jsonb(value: Any) -> str:
    # The row builder hands jsonb values over as JSON text already (converters.JsonText).
    return text(value.text)


plain: Formatter = str  # int, Decimal, a canonical UUID: nothing to escape
exact_float: Formatter = repr  # the shortest text that reads back as the same double
