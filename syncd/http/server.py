"""The daemon's one HTTP port: metrics, health, status, sync and ingest (docs/operations.md,
"HTTP"). This module listens and holds the connections and their limits; a request's
head is read in `request`, its body in `body`; `routes` decides what answers it and
`endpoints` answers; `responses` makes the bytes sent back.

Anyone who can connect can try to starve it, and `/healthz` must still answer: a
liveness probe that a few idle sockets can fail would get a healthy daemon restarted.
So connections are not threads. One asyncio event loop, in one thread, reads every
request head, reads bodies and writes answers, each under a deadline; only the
app's blocking calls (the database behind `/status` and `/readyz`, pushes) run in
small thread pools, and only once a whole request has arrived. What a client
controls is bounded:

- the request line and headers: `max_head` bytes (64 KiB), 100 headers, within
  `head_timeout` seconds of connecting;
- a body: `http.max_body` bytes, within `body_timeout`; a body the answer does not
  need (a wrong key, an unknown path) is read and dropped, within the same bounds,
  before answering, so the client reads the answer instead of a reset;
- the answer: written within `send_timeout`;
- `max_connections` open at once; past that a new connection pushes out the oldest
  one still sending its head, so idle and slow clients cannot lock out a probe;
- one request per connection (every answer says `Connection: close`).

A handler's exception answers 500 and is logged; nothing a client sends ends the
server. The server knows nothing of syncd beyond the `App` protocol the daemon
implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from syncd.config.model import Http
from syncd.http.app import App, PostHandler, Unavailable
from syncd.http.body import drop_body, read_body
from syncd.http.endpoints import Endpoints
from syncd.http.ratelimit import RateLimited
from syncd.http.request import Gone, Refused, Request, read_head, unread
from syncd.http.responses import INTERNAL_ERROR, TOO_MANY_CONNECTIONS, Response, error, head
from syncd.http.routes import Get, route
from syncd.http.workers import Pool

__all__ = ["App", "Limits", "PostHandler", "ServerHandle", "Unavailable", "serve"]

log = structlog.get_logger("syncd.http")

LINGER = 0.5  # seconds spent reading what a client still sends after our answer
UNAVAILABLE_LOG_EVERY = 60.0  # seconds between two warnings about the same 503


@dataclass(frozen=True)
class Limits:
    head_timeout: float = 10.0  # from connecting to the end of the headers
    body_timeout: float = 60.0  # the whole request body
    send_timeout: float = 10.0  # the whole answer
    max_head: int = 64 * 1024  # request line and headers together, in bytes
    max_headers: int = 100
    max_connections: int = 512  # open at once (the daemon's file limit is 1024)
    workers: int = 8  # threads for pushes and sync requests; as many again for reads
    queued: int = 32  # app calls running or waiting for a thread, per pool; beyond: 503
    call_timeout: float = 30.0  # the longest a request waits for its app call

    def pool(self, name: str) -> Pool:
        return Pool(name, workers=self.workers, queued=self.queued, timeout=self.call_timeout)


@dataclass(eq=False)
class _Connection:
    """One open connection: its task, and whether it may be dropped to make room: while
    it sends its head, and while it sends a body its answer does not need."""

    task: asyncio.Task[None] | None
    opened: float
    droppable: bool = True


class ServerHandle:
    """A running server: `port` is the bound port (`http.port` may be 0)."""

    def __init__(self, server: _Server, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.port = port

    def shutdown(self) -> None:
        """Stop accepting, drop every open connection, free the port."""
        self._server.stop()
        self._thread.join(timeout=5)


def serve(
    http: Http,
    registry: CollectorRegistry,
    app: App,
    *,
    limits: Limits | None = None,
) -> ServerHandle:
    """Bind `http.host:http.port` now (OSError if it cannot) and serve from a thread."""
    family = _address_family(http.host, http.port)
    sock = socket.create_server(
        (http.host, http.port),
        family=family,
        backlog=128,
        # "::" takes IPv4 too, as a plain bind() on Linux does.
        dualstack_ipv6=http.host == "::" and socket.has_dualstack_ipv6(),
    )
    server = _Server(http, registry, app, limits or Limits(), sock)
    thread = threading.Thread(target=server.run, name="syncd-http", daemon=True)
    thread.start()
    if not server.started.wait(10) or server.failed is not None:
        server.stop()
        sock.close()
        raise OSError(f"the HTTP server did not start: {server.failed or 'timed out'}")
    return ServerHandle(server, thread, sock.getsockname()[1])


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for `::1`, `::` or a name with only IPv6 addresses; IPv4 otherwise (so
    `localhost` and "" stay on 127.0.0.1 and 0.0.0.0, as an operator expects)."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return socket.AF_INET6 if ":" in host else socket.AF_INET  # bind() will say why
    families = {info[0] for info in infos}
    return socket.AF_INET if socket.AF_INET in families else socket.AF_INET6


class _Server:
    def __init__(
        self,
        http: Http,
        registry: CollectorRegistry,
        app: App,
        limits: Limits,
        sock: socket.socket,
    ) -> None:
        self.http = http
        self.limits = limits
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_log_loop_error)
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        self._reads = limits.pool("http-read")
        self._writes = limits.pool("http-write")
        self._rate = RateLimited(UNAVAILABLE_LOG_EVERY)
        self._endpoints = Endpoints(
            registry, app, self._loop, reads=self._reads, writes=self._writes, rate=self._rate
        )
        self.started = threading.Event()
        self.failed: BaseException | None = None
        self._stopped = asyncio.Event()

    # -- the loop's thread -----------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # told to serve(), which is waiting for the start
            self.failed = exc
            self.started.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        server = await asyncio.start_server(
            self._accepted, sock=self._sock, limit=self.limits.max_head
        )
        self.started.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            tasks = [c.task for c in self._connections.values() if c.task is not None]
            for writer in list(self._connections):
                writer.transport.abort()
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=1)
            await server.wait_closed()

    def stop(self) -> None:
        """From any thread. Pool threads still running a handler finish on their own."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stopped.set)
        self._reads.shutdown()
        self._writes.shutdown()

    # -- one connection ----------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._make_room():
            writer.write(TOO_MANY_CONNECTIONS)  # every connection is busy with real work
            writer.close()
            return
        connection = _Connection(asyncio.current_task(), time.monotonic())
        self._connections[writer] = connection
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "-"
        request = unread(client)
        limits = self.limits
        try:
            try:
                async with asyncio.timeout(limits.head_timeout):
                    request = await read_head(reader, client, limits.max_head, limits.max_headers)
                connection.droppable = False
                response = await self._respond(request, reader, writer, connection)
            except Refused as refused:
                response = refused.response
            except TimeoutError:
                response = error(408, "request head timed out")
            await self._answer(writer, reader, request, response, connection)
        except (Gone, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("http.client_gone", client=client)
        except Exception:  # a bug: never the server's end, and one line a minute
            fields = self._rate.due("connection_failed")
            if fields is not None:
                log.exception("http.connection_failed", client=client, **fields)
            with contextlib.suppress(Exception):
                writer.write(INTERNAL_ERROR)
        finally:
            self._connections.pop(writer, None)
            writer.transport.abort()

    def _make_room(self) -> bool:
        """At the connection limit, the oldest droppable connection goes (still sending
        its head, or a body nobody needs): a probe that connects later gets its turn.
        False when none can go: every connection is doing real work."""
        if len(self._connections) < self.limits.max_connections:
            return True
        droppable = [(c.opened, w) for w, c in self._connections.items() if c.droppable]
        if not droppable:
            return False
        _, oldest = min(droppable, key=lambda pair: pair[0])
        log.debug("http.dropped_slow_client", open=len(self._connections))
        oldest.transport.abort()
        self._connections.pop(oldest, None)
        return True

    async def _respond(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
    ) -> Response:
        request.body_pending = request.announces_body()
        found = route(request, self._endpoints.gets, self._endpoints.posts, self.http)
        if isinstance(found, Response):
            return found
        if isinstance(found, Get):
            return await found.endpoint(request)
        connection.droppable = False  # a client with the key: its push is real work
        body = await read_body(
            request, reader, writer, self.http.max_body, self.limits.body_timeout
        )
        return await self._endpoints.post(request, found.handler, found.entity, body)

    # -- answering -------------------------------------------------------------------

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        request: Request,
        response: Response,
        connection: _Connection,
    ) -> None:
        if request.body_pending:
            connection.droppable = True  # a body nobody needs: not worth a slot
            await drop_body(request, reader, self.http.max_body, self.limits.body_timeout)
        writer.write(head(response))
        if request.method != "HEAD":
            writer.write(response.body)
        async with asyncio.timeout(self.limits.send_timeout):
            await writer.drain()
            if request.linger:
                await _linger(writer, reader)
            writer.close()
            await writer.wait_closed()
        log.debug(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status,
            client=request.client,
        )


async def _linger(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
    """Closing with unread data resets the connection, and the client may then lose
    our answer: after it, shut our side and read what still comes, for a moment."""
    with contextlib.suppress(TimeoutError, OSError):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(65536):
                pass


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """What asyncio would print to stderr as plain text (an error in a callback, such as
    a connection cancelled while stopping: CPython gh-113538), logged as one JSON event
    like every other line syncd writes."""
    exc = context.get("exception")
    log.warning(
        "http.loop_error",
        message=str(context.get("message", "")),
        error=repr(exc) if exc is not None else None,
    )
