"""Drift-safe paging through one window with `limit`/`offset`.

The source may change between two page requests. A record that leaves the window
(updated, so its new time is past `toTime`) shifts every later offset down: a naive
pager that asks for `offset + limit` next skips the record that slid across the page
boundary. A record that appears (late-visible) shifts them up: harmless duplicates.

How syncd pages, so that no shift loses a record:

* Consecutive requests overlap: the next offset is `offset + len(page) - overlap`.
* The last `overlap` records of the accepted page are *anchors*. The next page is
  accepted only if it contains one of them; everything after the latest anchor found
  is new, and nothing between the anchor and the new records can have been skipped,
  because the source's order is stable. Anchors are compared by their whole content,
  so a record that was updated (and so may have moved) never passes for its old self.
* No anchor in the page means the records shifted down by `overlap` or more: the
  pager looks again further back (twice the overlap, then four times, ... down to
  offset 0, which needs no anchor) with every record of the last page as an anchor,
  and pages with a larger overlap from then on.
* Re-reads are bounded per window; past the bound the window fails with
  `PagingError`, nothing is committed for it and the watermark stays where it was.

Records in the overlap are never yielded twice. A record can be yielded again only
when more records appear before the read position between two requests than a page
less its overlap (the pager cannot tell that from a shift down, and re-reads): then
some are fetched twice, harmlessly (the upsert rewrites nothing), and counted twice
in `rows_fetched`, never in `rows_written`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from syncd.db.storable import storable_json
from syncd.errors import PagingError

# (offset, limit) -> the records of that page, in the source's order.
FetchPage = Callable[[int, int], list[Any]]

MAX_REREADS = 32  # per window; each step back and each empty full page counts one


def overlap_for(page_size: int) -> int:
    """How many records two consecutive requests share: ~2% of a page, 1 to 50.

    Larger overlap survives larger shifts without a re-read; it costs the same share
    of every request."""
    return max(1, min(page_size // 50, 50))


def identity(record: Any) -> str:
    """A record's full content, canonically: equal only for the same version."""
    try:
        return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    except RecursionError:
        # Nested nearly as deep as the decoder allows: its first levels stand for it.
        # (Two such records alike in their first hundred levels would pass for one.)
        return "deep:" + json.dumps(storable_json(record), sort_keys=True, default=str)


def _find_anchor(page: list[Any], anchors: dict[str, int]) -> int | None:
    """Index in `page` of the latest anchor it contains, or None.

    "Latest" is by position among the anchors (the previous page's order), because
    the records after that one are exactly what has not been read yet."""
    best_rank = -1
    best_index: int | None = None
    last_rank = max(anchors.values())
    for index, record in enumerate(page):
        rank = anchors.get(identity(record))
        if rank is not None and rank > best_rank:
            best_rank, best_index = rank, index
            if rank == last_rank:  # the very last anchor: nothing can beat it
                break
    return best_index


class WindowReader:
    """Pages through one window. `batches()` yields the window's records in batches
    (one per accepted page), each once; it ends at the first page shorter than
    `page_size`, or early when `should_stop()` turns true, in which case `complete`
    stays False and the caller must not treat the window as read."""

    def __init__(
        self,
        fetch: FetchPage,
        page_size: int,
        *,
        overlap: int | None = None,
        max_rereads: int = MAX_REREADS,
    ) -> None:
        if page_size < 2:
            raise ValueError("page_size must be at least 2: pages overlap by one record or more")
        self.fetch = fetch
        self.page_size = page_size
        self.overlap = overlap_for(page_size) if overlap is None else overlap
        if not 1 <= self.overlap < page_size:
            raise ValueError(f"overlap must be between 1 and {page_size - 1}")
        self.max_rereads = max_rereads
        self.rereads = 0
        self.requests = 0
        self.complete = False

    def _reread(self, why: str) -> None:
        self.rereads += 1
        if self.rereads > self.max_rereads:
            raise PagingError(
                f"the window kept shifting while it was paged ({why}); "
                f"gave up after {self.max_rereads} re-reads, nothing committed for it"
            )

    def batches(self, should_stop: Callable[[], bool] = lambda: False) -> Iterator[list[Any]]:
        offset = 0
        previous: list[Any] = []  # the last accepted page ...
        previous_offset = previous_end = 0  # ... where it started, and just past it
        anchors: dict[str, int] = {}  # identity -> rank, in `previous` order
        misses = 0  # consecutive pages without an anchor
        while not should_stop():
            page = self.fetch(offset, self.page_size)
            self.requests += 1
            if previous and offset != previous_offset and _same_page(page, previous):
                # Every offset answered alike: the source ignores `offset` (or the window
                # is one record repeated). Counted, so it ends; the page is still read
                # as usual, in case a burst of new records shifted it just so.
                self._reread(
                    f"offset {offset} answered with the page of offset {previous_offset}: "
                    "does the source honour the offset parameter (source.params.offset)?"
                )
            start = 0
            if anchors:
                found = _find_anchor(page, anchors)
                if found is not None:
                    start = found + 1
                elif offset > 0:
                    # Shifted down by `overlap` or more since the last page. Look
                    # again further back, with every record of the last page as an
                    # anchor, and keep a larger overlap from now on: the window is
                    # busier than the overlap allowed for.
                    self._reread(f"no overlap at offset {offset}")
                    misses += 1
                    self.overlap = max(self.overlap, min(2 * self.overlap, self.page_size // 2))
                    offset = max(0, previous_end - self.overlap * 2**misses)
                    anchors = _anchors(previous)
                    continue
                # At offset 0 nothing can lie before the page: read it all again.
            misses = 0
            fresh = page[start:]
            if fresh:
                yield fresh
            if len(page) < self.page_size:
                self.complete = True
                return
            if not fresh:
                # A full page with nothing after its anchor: the source is not moving
                # forward (it may ignore `offset`). Bounded, or this would never end.
                self._reread(f"a full page at offset {offset} brought no new record")
            previous, previous_offset, previous_end = page, offset, offset + len(page)
            anchors = _anchors(page[-self.overlap :])
            offset = previous_end - self.overlap


def _same_page(page: list[Any], previous: list[Any]) -> bool:
    """Two pages of the same length that begin and end with the same records."""
    return (
        len(page) == len(previous)
        and identity(page[0]) == identity(previous[0])
        and identity(page[-1]) == identity(previous[-1])
    )


def _anchors(records: list[Any]) -> dict[str, int]:
    return {identity(record): rank for rank, record in enumerate(records)}
