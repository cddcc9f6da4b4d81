"""Threads for the app's blocking calls (the database behind /status and /readyz,
pushes), so that the event loop never waits for one: each call bounded in how many
may wait and in how long anyone waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Too many app calls already running or waiting, or one too slow: 503."""


class Pool:
    """At most `queued` calls running or waiting at once on `workers` threads, each
    waited for at most `timeout` seconds (it runs on; nobody waits for it)."""

    def __init__(self, name: str, *, workers: int, queued: int, timeout: float) -> None:
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._slots = queued
        self._timeout = timeout

    async def run(self, loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
        """`work()` in a thread; Busy when there is no slot for it or no answer in time.
        Called from the event loop's thread only (the slot count is not locked)."""
        if self._slots <= 0:
            raise Busy("busy, retry")
        try:
            future = loop.run_in_executor(self._threads, work)
        except RuntimeError:  # the pool is shut down: the server is stopping
            raise Busy("stopping") from None
        self._slots -= 1
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise Busy(f"no answer within {self._timeout:g}s, retry") from None
        finally:
            self._slots += 1

    def shutdown(self) -> None:
        """Calls still running finish on their own; waiting ones are dropped."""
        self._threads.shutdown(wait=False, cancel_futures=True)
