"""Requests to sources that can be cut short: at a deadline for the whole request, or
all at once when the daemon stops.

urllib3's timeouts bound each socket operation, not a request: a source that sends a
byte every few seconds keeps a request, and the run waiting on it, alive for ever, and
a stop waits for it. Here each request is registered (`InFlight.start`) by the thread
making it; the connection hands its socket to that registration as soon as the request
is sent; at the deadline, or on `cut_all`, the socket is shut down from another thread,
which ends whatever read the requesting thread is blocked in. (A connect in progress
has no socket to hand over yet; urllib3's connect timeout bounds it.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # .request: the InFlight of this thread's request


class InFlight:
    """One request: its socket once it has one, and why it was cut, if it was."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = False
        self.cut_because: str | None = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._done:
                return
            self._sock = sock
            if self.cut_because is not None:
                _shut(sock)

    def done(self) -> None:
        """The answer is read (or given up): from now on the socket may serve another
        request from the pool, and a late cut must not touch it."""
        with self._lock:
            self._done, self._sock = True, None

    def cut(self, reason: str) -> None:
        with self._lock:
            if self._done:
                return
            if self.cut_because is None:
                self.cut_because = reason
            _shut(self._sock)


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        # socket.socket's own shutdown, also for a TLS socket: ssl.SSLSocket.shutdown
        # would tear down its TLS state under the reading thread.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Handover:
    """Gives the connection's socket to the request this thread is making."""

    sock: Any

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # type: ignore[misc]  # connects if need be
        request: InFlight | None = getattr(_current, "request", None)
        if request is not None:
            request.attach(self.sock)


class _HTTPConnection(_Handover, HTTPConnection):
    pass


class _HTTPSConnection(_Handover, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def pool_manager(**kwargs: Any) -> urllib3.PoolManager:
    """A urllib3 PoolManager whose requests `Requests` can cut."""
    manager = urllib3.PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class Requests:
    """The requests in flight through one pool manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flying: set[InFlight] = set()
        self._stopped: str | None = None

    @contextlib.contextmanager
    def start(self, seconds: float) -> Iterator[InFlight]:
        """Register the request this thread is about to make, cut after `seconds`."""
        request = InFlight()
        timer = threading.Timer(seconds, request.cut, (f"no complete answer within {seconds:g}s",))
        timer.daemon = True
        with self._lock:
            if self._stopped is not None:
                request.cut(self._stopped)
            self._flying.add(request)
        _current.request = request
        timer.start()
        try:
            yield request
        finally:
            request.done()
            timer.cancel()
            _current.request = None
            with self._lock:
                self._flying.discard(request)

    def cut_all(self, reason: str) -> None:
        """Cut every request in flight, and every one started from now on."""
        with self._lock:
            self._stopped = reason
            flying = list(self._flying)
        for request in flying:
            request.cut(reason)
