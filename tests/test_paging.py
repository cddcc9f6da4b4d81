"""The drift-safe pager against a window that changes between every two page requests.

The window here is a plain sorted list (the pager's algorithm is pure); the same
behaviour through real HTTP and PostgreSQL is pinned in test_engine.py."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from syncd.errors import PagingError
from syncd.sync.paging import WindowReader, overlap_for


class DriftingWindow:
    """Records ordered by (time, id); `drift` runs before every page request."""

    def __init__(self, count: int) -> None:
        self.rows: list[dict[str, Any]] = [{"id": i, "t": i, "v": 0} for i in range(count)]
        self.next_id = count
        self.requests = 0
        self.drift: Callable[[], None] = lambda: None

    def fetch(self, offset: int, limit: int) -> list[dict[str, Any]]:
        if self.requests:
            self.drift()
        self.requests += 1
        return [dict(r) for r in self.rows[offset : offset + limit]]

    def move_out(self, index: int) -> dict[str, Any]:
        """An update: the record's new time is past toTime, so it leaves the window."""
        return self.rows.pop(index)

    def appear(self, index: int) -> None:
        """A late-visible record shows up at `index` (its time is inside the window)."""
        self.rows.insert(index, {"id": self.next_id, "t": -1, "v": 0})
        self.next_id += 1


def read_all(window: DriftingWindow, page_size: int, **kwargs: Any) -> list[dict[str, Any]]:
    reader = WindowReader(window.fetch, page_size, **kwargs)
    out = [record for batch in reader.batches() for record in batch]
    assert reader.complete
    return out


def test_a_still_window_is_read_once_in_order() -> None:
    window = DriftingWindow(1000)
    got = read_all(window, 100)
    assert [r["id"] for r in got] == list(range(1000))


@pytest.mark.parametrize("count", [0, 1, 99, 100, 101, 197, 198, 199])
def test_window_edges_around_page_boundaries(count: int) -> None:
    window = DriftingWindow(count)
    assert [r["id"] for r in read_all(window, 100)] == list(range(count))


def test_a_record_moving_out_before_the_offset_loses_nothing() -> None:
    """The naive pager's loss: one record before the offset leaves, everything
    shifts down by one, and the record at the page boundary is never seen."""
    window = DriftingWindow(300)
    moved: list[int] = []

    def drift() -> None:
        moved.append(window.move_out(0)["id"])

    window.drift = drift
    got = {r["id"] for r in read_all(window, 100)}
    stayed = set(range(300)) - set(moved)
    assert stayed <= got


def test_shifts_larger_than_the_overlap_step_back_and_lose_nothing() -> None:
    window = DriftingWindow(2000)
    overlap = overlap_for(100)
    moved: set[int] = set()

    def drift() -> None:
        for _ in range(overlap * 3):  # far more than the overlap absorbs
            moved.add(window.move_out(0)["id"])

    window.drift = drift
    reader = WindowReader(window.fetch, 100)
    got = {r["id"] for batch in reader.batches() for r in batch}
    assert reader.complete
    assert reader.rereads > 0
    assert set(range(2000)) - moved <= got


@pytest.mark.parametrize("seed", range(40))
def test_random_drift_between_every_two_pages_loses_nothing(seed: int) -> None:
    """Any record in the window from start to end, unchanged, is read; records that
    left are the next window's (their new time is past toTime)."""
    rng = random.Random(seed)
    window = DriftingWindow(rng.randint(0, 1500))
    page_size = rng.choice([2, 3, 10, 50, 100])
    left: set[int] = set()

    def drift() -> None:
        for _ in range(rng.choice([0, 1, 1, 2, 5, 20])):
            if window.rows and rng.random() < 0.6:
                left.add(window.move_out(rng.randrange(len(window.rows)))["id"])
            else:
                window.appear(rng.randint(0, len(window.rows)))

    window.drift = drift
    initial = window.next_id
    reader = WindowReader(window.fetch, page_size, max_rereads=10_000)
    got = {r["id"] for batch in reader.batches() for r in batch}
    assert reader.complete
    assert set(range(initial)) - left <= got


def test_duplicates_across_pages_are_yielded_once() -> None:
    window = DriftingWindow(500)
    window.drift = lambda: window.appear(0)  # shifts every later record up by one
    got = [r["id"] for r in read_all(window, 50)]
    originals = [i for i in got if i < 500]
    assert sorted(originals) == list(range(500))
    assert len(originals) == len(set(originals))


def test_a_source_that_ignores_offset_fails_after_bounded_rereads() -> None:
    rows = [{"id": i} for i in range(10)]
    reader = WindowReader(lambda offset, limit: rows[:limit], 10, max_rereads=5)
    with pytest.raises(PagingError, match="gave up after 5 re-reads"):
        for _ in reader.batches():
            pass
    assert reader.requests <= 7


def test_a_window_that_never_settles_fails() -> None:
    window = DriftingWindow(5000)

    def drift() -> None:
        for _ in range(40):
            window.move_out(0)

    window.drift = drift
    reader = WindowReader(window.fetch, 10, max_rereads=3)
    with pytest.raises(PagingError, match="kept shifting"):
        for _ in reader.batches():
            pass


def test_stop_ends_early_and_says_the_window_is_incomplete() -> None:
    window = DriftingWindow(1000)
    reader = WindowReader(window.fetch, 100)
    seen: list[Any] = []
    for batch in reader.batches(lambda: len(seen) >= 200):
        seen.extend(batch)
    assert not reader.complete
    assert len(seen) < 1000


def test_page_size_must_allow_an_overlap() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        WindowReader(lambda offset, limit: [], 1)
