"""How a stored value is written as PostgreSQL input text, and how COPY escapes it.

One pure function per column type (the registry in `syncd.columns.types` says which
serves which type) writes a converted value (what `syncd.columns.converters`
produced) as the text PostgreSQL reads back exactly: the value's cell
(`syncd.columns.cells`). Each type's converter reads its cells back as the same
value. Only text and jsonb cells can hold the characters COPY treats specially
(backslash, tab, newline, carriage return): `escape` is for those. NULL (`\\N` in
COPY) is the caller's: a writer never sees None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Writer = Callable[[Any], str]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = re.compile(r"[\\\t\n\r]")


def escape(cell: str) -> str:
    """A text or jsonb cell as it goes in a COPY line."""
    # Most values hold no special character: searching is far cheaper than translating.
    return cell.translate(_ESCAPES) if _SPECIAL.search(cell) else cell


def boolean(value: Any) -> str:
    # Spelled out: the boolean converter reads its own cells back (keys and versions
    # are compared as values; see syncd.db.store).
    return "true" if value else "false"


def iso(value: Any) -> str:
    """A date or a datetime, as ISO 8601 (PostgreSQL reads it back exactly)."""
    return str(value.isoformat())


def jsonb(value: Any) -> str:
    # The converter hands jsonb values over as JSON text already (converters.JsonText).
    return str(value.text)


def itself(value: str) -> str:
    """Text and a canonical UUID: the converted value is the cell already."""
    return value


plain: Writer = str  # int, Decimal
exact_float: Writer = repr  # the shortest text that reads back as the same double
