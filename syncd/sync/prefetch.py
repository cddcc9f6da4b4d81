"""Run a producer in a thread, one step ahead of its consumer.

Fetching and decoding the next page overlaps with writing the current one: the
writer spends most of its time waiting on PostgreSQL with the GIL released."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL = 0.1  # seconds between checks that the other side is still there


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetched(Generic[T]):
    """Iterate over `produce()` from a worker thread, at most `depth` items ahead.

    An exception in the producer is raised in the consumer; a consumer that stops
    early (`close()`, or leaving a `with` block) stops the producer at its next item.
    Memory stays bounded: at most `depth` items wait in the queue."""

    def __init__(self, produce: Callable[[], Iterator[T]], depth: int = 2, name: str = "prefetch"):
        self._items: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._produce = produce
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: T | _Done | _Failed) -> bool:
        while not self._closed.is_set():
            try:
                self._items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._produce():
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which decides
            self._put(_Failed(exc))
            return
        self._put(_Done())

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._items.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
