"""What the database layer stores: a row of cells, and a record refused.

They live here, below the code that builds them (`syncd.sync.records`) and above
none of it, so that the store, the COPY formatter and the run log need nothing
from the sync layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# One cell per column, in the entity's column order: the text PostgreSQL reads as the
# column's value (`syncd.columns.cells`), or None for NULL.
Row = tuple[str | None, ...]


@dataclass(frozen=True)
class Reject:
    """A record that cannot be stored, as received, and why (it goes to sync_rejects)."""

    record: Any
    reason: str
