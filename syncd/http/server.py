"""The daemon's one HTTP port: metrics, health, status, sync and ingest (docs/operations.md,
"HTTP endpoints").

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

`/healthz` and `/metrics` are answered in the event loop itself, so they never wait
for a database call. A handler's exception answers 500 and is logged; nothing a
client sends ends the server. The server knows nothing of syncd beyond the `App`
protocol the daemon implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import http.client
import io
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.config.model import Http

log = structlog.get_logger("syncd.http")

# handler(entity or None, body) -> (status, JSON object). The entity is the last path
# segment for a route registered as ".../{entity}", None for an exact path. Handlers
# block (they use the database); they run in a worker thread.
PostHandler = Callable[[str | None, bytes], tuple[int, dict[str, Any]]]

SYNC_ROUTE = "/v1/sync/{entity}"
ENTITY = "{entity}"
JSON = "application/json"
LINGER = 0.5  # seconds spent reading what a client still sends after our answer
UNAVAILABLE_LOG_EVERY = 60.0  # seconds between two warnings about the same 503
_CHUNK_LINE = 1024  # longest chunk-size line accepted in a chunked body
_MAX_TRAILERS = 100
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a token (RFC 9110)
_DIGITS = re.compile(r"[0-9]{1,18}")
_FULL = b"".join(
    [
        b"HTTP/1.1 503 Service Unavailable\r\nServer: syncd\r\nContent-Type: application/json\r\n",
        b"Content-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        b'{"error": "too many open connections"}',
    ]
)
_INTERNAL = (
    b"HTTP/1.1 500 Internal Server Error\r\nServer: syncd\r\nContent-Type: application/json\r\n"
    b'Content-Length: 27\r\nConnection: close\r\n\r\n{"error": "internal error"}'
)
_KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


class Unavailable(Exception):
    """The app cannot answer this now (starting, or its database is away): 503 with
    this one-line reason and Retry-After. Not a bug: logged as a warning, rarely."""


class App(Protocol):
    """What the daemon provides. Every method but `alive` may block."""

    def alive(self) -> bool:
        """/healthz: the main loop has ticked recently. Must not block."""
        ...

    def ready(self) -> tuple[bool, str]:
        """/readyz: (ok, reason): config loaded and the database answers."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """/status: the same JSON as `syncd status --json`; may raise Unavailable."""
        ...

    def trigger(self, entity: str) -> bool:
        """POST /v1/sync/{entity}: queue a run; False for an unknown entity; may raise
        Unavailable."""
        ...

    def post_routes(self) -> Mapping[str, PostHandler]:
        """Extra POST paths (ingest), exact or ending in "/{entity}"; all need the key.
        Must not block."""
        ...


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


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any, **headers: str) -> _Response:
    return _Response(status, json.dumps(payload).encode(), JSON, headers)


def _error(status: int, message: str, **headers: str) -> _Response:
    return _json(status, {"error": message}, **headers)


class _Refused(Exception):
    """The request cannot be served: answer `response` (and close)."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Gone(Exception):
    """The client hung up: nobody to answer."""


@dataclass
class _Request:
    method: str
    path: str  # the target's path, unquoted only where a route says so
    headers: Message
    client: str
    body_pending: bool = False  # a body was announced and not read yet
    linger: bool = False  # answered while the client may still be sending: see _linger

    def header_list(self, name: str) -> list[str]:
        return ",".join(self.headers.get_all(name) or []).split(",")


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


class _RateLimited:
    """A log line written at most once per `every` seconds per key, with a count of
    those left out: an outage, or a client repeating a request, must not write a line
    per request."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, left out since)

    def due(self, key: str) -> dict[str, int] | None:
        """None if `key` was logged within `every`; else the fields to add to the line."""
        now = time.monotonic()
        logged_at, left_out = self._last.get(key, (float("-inf"), 0))
        if now - logged_at < self.every:
            self._last[key] = (logged_at, left_out + 1)
            return None
        self._last[key] = (now, 0)
        return {"similar_left_out": left_out} if left_out else {}


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
        self.registry = registry
        self.app = app
        self.limits = limits
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        # Reads (/status, /readyz) and writes (pushes, sync requests) wait in separate
        # pools, so a slow push never delays a readiness probe.
        self._reads = _Pool(limits, "http-read")
        self._writes = _Pool(limits, "http-write")
        self._rate = _RateLimited(UNAVAILABLE_LOG_EVERY)
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
            writer.write(_FULL)  # every connection is busy with real work: come back
            writer.close()
            return
        connection = _Connection(asyncio.current_task(), time.monotonic())
        self._connections[writer] = connection
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "-"
        request = _Request("-", "", Message(), client, linger=True)  # until its head is read
        try:
            try:
                async with asyncio.timeout(self.limits.head_timeout):
                    request = await self._read_head(reader, client)
                connection.droppable = False
                response = await self._respond(request, reader, writer, connection)
            except _Refused as refused:
                response = refused.response
            except TimeoutError:
                response = _error(408, "request head timed out")
            await self._answer(writer, reader, request, response, connection)
        except (_Gone, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("http.client_gone", client=client)
        except Exception:  # a bug: never the server's end, and one line a minute
            fields = self._rate.due("connection_failed")
            if fields is not None:
                log.exception("http.connection_failed", client=client, **fields)
            with contextlib.suppress(Exception):
                writer.write(_INTERNAL)
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

    async def _read_head(self, reader: asyncio.StreamReader, client: str) -> _Request:
        lines: list[bytes] = []
        size = 0
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than max_head
                status = 414 if not lines else 431
                raise _Refused(_error(status, HTTPStatus(status).phrase.lower())) from None
            if not line.endswith(b"\n"):
                raise _Gone  # the client closed mid-head
            size += len(line)
            if size > self.limits.max_head:
                raise _Refused(_error(431, "request head larger than 64 KiB"))
            if not lines and line in (b"\r\n", b"\n"):
                continue  # RFC 9112 2.2: ignore empty lines before the request line
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line)
            if len(lines) > self.limits.max_headers + 1:
                raise _Refused(_error(431, "too many headers"))
        method, path = _request_line(lines[0])
        try:
            headers = http.client.parse_headers(io.BytesIO(b"".join(lines[1:]) + b"\r\n"))
        except http.client.HTTPException:
            raise _Refused(_error(431, "request header fields too large")) from None
        return _Request(method, path, headers, client)

    async def _respond(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
    ) -> _Response:
        request.body_pending = "Transfer-Encoding" in request.headers or request.headers.get(
            "Content-Length", "0"
        ).strip() not in ("", "0")
        if request.method not in _KNOWN_METHODS:
            return _error(501, "method not implemented", Allow="GET, HEAD, POST")
        getter = _GET_ROUTES.get(request.path)
        if getter is not None:
            if request.method not in ("GET", "HEAD"):
                return _error(405, "method not allowed", Allow="GET, HEAD")
            return await getter(self, request)
        routes: dict[str, PostHandler] = {**self.app.post_routes(), SYNC_ROUTE: self._sync}
        match = _match(routes, request.path)
        if match is None:
            return _error(404, "not found")
        if request.method != "POST":
            return _error(405, "method not allowed", Allow="POST")
        denied = self._check_key(request)
        if denied is not None:
            return denied
        connection.droppable = False  # a client with the key: its push is real work
        body = await self._read_body(request, reader, writer)
        handler, entity = match
        return await self._call(self._writes, request, lambda: self._post(handler, entity, body))

    # -- GET -------------------------------------------------------------------------

    async def _metrics(self, request: _Request) -> _Response:
        try:
            output = generate_latest(self.registry)
        except Exception:
            log.exception("http.metrics_failed")
            return _error(500, "collecting metrics failed")
        accepted = {part.split(";")[0].strip() for part in request.header_list("Accept-Encoding")}
        if "gzip" in accepted:
            return _Response(
                200, gzip.compress(output), CONTENT_TYPE_LATEST, {"Content-Encoding": "gzip"}
            )
        return _Response(200, output, CONTENT_TYPE_LATEST)

    async def _healthz(self, request: _Request) -> _Response:
        try:
            alive = self.app.alive()
        except Exception:
            log.exception("http.healthz_failed")
            alive = False
        return _json(200, {"status": "ok"}) if alive else _error(503, "main loop not alive")

    async def _readyz(self, request: _Request) -> _Response:
        def ready() -> _Response:
            ok, reason = self.app.ready()
            return _json(200, {"status": "ok"}) if ok else _error(503, reason)

        return await self._call(self._reads, request, ready)

    async def _status(self, request: _Request) -> _Response:
        return await self._call(self._reads, request, lambda: _json(200, self.app.status()))

    async def _call(
        self, pool: _Pool, request: _Request, work: Callable[[], _Response]
    ) -> _Response:
        """`work` in a pool thread: its answer; 503 for Unavailable, for a full pool, or
        when it takes longer than `call_timeout` (it runs on; nobody waits for it); 500
        for a bug."""
        try:
            return await pool.run(self._loop, work)
        except Unavailable as exc:
            return self._unavailable(request, str(exc))
        except _Busy as exc:
            return self._unavailable(request, str(exc))
        except Exception:
            log.exception("http.handler_failed", method=request.method, path=request.path)
            return _error(500, "internal error")

    def _unavailable(self, request: _Request, reason: str) -> _Response:
        fields = self._rate.due(request.path)
        if fields is not None:
            log.warning("http.unavailable", path=request.path, reason=reason, **fields)
        return _error(503, reason, **{"Retry-After": "1"})

    # -- POST ------------------------------------------------------------------------

    @staticmethod
    def _post(handler: PostHandler, entity: str | None, body: bytes) -> _Response:
        status, payload = handler(entity, body)
        if status == 503:  # busy: tell well-behaved clients when to come back
            return _json(status, payload, **{"Retry-After": "1"})
        return _json(status, payload)

    def _sync(self, entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        if entity is None or not self.app.trigger(entity):
            return 404, {"error": f"unknown entity {entity!r}"}
        return 202, {"entity": entity, "status": "queued"}

    def _check_key(self, request: _Request) -> _Response | None:
        http = self.http
        if http.api_key is None:
            return _error(403, "forbidden: no http.api_key_file configured")
        given = request.headers.get(http.api_key_header)
        # Headers arrive decoded as Latin-1: encoding back gives the bytes sent.
        if given is None or not hmac.compare_digest(
            given.encode("latin-1", "replace"), http.api_key.reveal().encode()
        ):
            return _error(401, f"missing or wrong {http.api_key_header}")
        return None

    async def _read_body(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        """The whole body, never more than `http.max_body` of it in memory; _Refused
        with the answer when it cannot be had."""
        try:
            body = await self._receive_body(request, reader, writer)
        except _Refused:
            request.body_pending, request.linger = False, True
            raise
        request.body_pending = False
        return body

    async def _receive_body(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        max_body = self.http.max_body
        encoding = request.headers.get("Transfer-Encoding")
        length = request.headers.get("Content-Length")
        if encoding is not None and length is not None:
            raise _Refused(_error(400, "both Transfer-Encoding and Content-Length"))  # smuggling
        if encoding is None and length is None:
            return b""  # RFC 9112 6.3: a request with neither has no body
        if encoding is not None and encoding.strip().lower() != "chunked":
            raise _Refused(_error(501, f"unsupported Transfer-Encoding {encoding!r}"))
        if length is not None:
            lengths = set(request.headers.get_all("Content-Length") or [])
            if len(lengths) > 1 or _content_length(length) is None:
                raise _Refused(_error(400, "bad Content-Length"))
            if int(length) > max_body:
                raise _Refused(_error(413, f"body over {max_body} bytes"))
        if request.headers.get("Expect", "").lower() == "100-continue":
            # Only now that the key and the size are known good is the body wanted.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                if length is None:
                    body = await _read_chunked(reader, max_body)
                else:
                    body = await reader.readexactly(int(length))
        except TimeoutError:
            raise _Refused(_error(408, "request body timed out")) from None
        except asyncio.IncompleteReadError:
            raise _Gone from None
        except ValueError as exc:
            raise _Refused(_error(400, str(exc))) from None
        except _TooLarge:
            raise _Refused(_error(413, f"body over {max_body} bytes")) from None
        return body

    # -- answering -------------------------------------------------------------------

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        reader: asyncio.StreamReader,
        request: _Request,
        response: _Response,
        connection: _Connection,
    ) -> None:
        if request.body_pending:
            connection.droppable = True  # a body nobody needs: not worth a slot
            await self._drop_body(request, reader)
        head = [
            f"HTTP/1.1 {response.status} {_phrase(response.status)}",
            "Server: syncd",
            f"Date: {_http_date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
            "Connection: close",
            "",
            "",
        ]
        writer.write("\r\n".join(head).encode("latin-1"))
        if request.method != "HEAD":
            writer.write(response.body)
        async with asyncio.timeout(self.limits.send_timeout):
            await writer.drain()
            if request.linger:
                await self._linger(writer, reader)
            writer.close()
            await writer.wait_closed()
        log.debug(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status,
            client=request.client,
        )

    async def _drop_body(self, request: _Request, reader: asyncio.StreamReader) -> None:
        """Read and forget a body the answer does not need, within the body's limits, so
        that the client, still sending, gets to read the answer. A client waiting for
        `100 Continue` has sent nothing and is not waited for."""
        request.body_pending, request.linger = False, True
        if request.headers.get("Expect", "").lower() == "100-continue":
            return
        length = _content_length(request.headers.get("Content-Length", ""))
        if length is not None and length > self.http.max_body:
            return  # too large to wait for: answered at once, then _linger
        with contextlib.suppress(TimeoutError, ValueError, _TooLarge, asyncio.IncompleteReadError):
            async with asyncio.timeout(self.limits.body_timeout):
                if length is not None:
                    await _discard(reader, length)
                else:
                    await _read_chunked(reader, self.http.max_body, keep=False)
                request.linger = False

    async def _linger(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """Closing with unread data resets the connection, and the client may then lose
        our answer: after it, shut our side and read what still comes, for a moment."""
        with contextlib.suppress(TimeoutError, OSError):
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await reader.read(65536):
                    pass


_GET_ROUTES: dict[str, Callable[[_Server, _Request], Awaitable[_Response]]] = {
    "/metrics": _Server._metrics,
    "/healthz": _Server._healthz,
    "/readyz": _Server._readyz,
    "/status": _Server._status,
}


def _request_line(line: bytes) -> tuple[str, str]:
    """(method, path) of `METHOD SP TARGET SP HTTP/1.x`; _Refused otherwise."""
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1]:
        raise _Refused(_error(400, "bad request line"))
    method, target, version = parts
    if not re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
        raise _Refused(_error(400, "bad HTTP version"))
    if not version.startswith("HTTP/1."):
        raise _Refused(_error(505, "HTTP version not supported"))
    try:
        path = urlsplit(target).path
    except ValueError:  # e.g. "//[x": an authority urllib cannot read
        raise _Refused(_error(400, "bad request target")) from None
    return method, path


def _content_length(text: str) -> int | None:
    """A Content-Length value: ASCII digits only (str.isdigit takes "²" too)."""
    text = text.strip()
    return int(text) if _DIGITS.fullmatch(text) else None


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    """Read `size` bytes and keep none of them."""
    while size > 0:
        chunk = await reader.read(min(size, 65536))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(chunk)


class _Busy(Exception):
    """Too many app calls already running or waiting: 503."""


class _Pool:
    """Threads for the app's blocking calls: at most `limits.queued` running or
    waiting at once, each waited for at most `limits.call_timeout` seconds."""

    def __init__(self, limits: Limits, name: str) -> None:
        self._threads = ThreadPoolExecutor(limits.workers, thread_name_prefix=name)
        self._slots = limits.queued
        self._timeout = limits.call_timeout

    async def run(
        self, loop: asyncio.AbstractEventLoop, work: Callable[[], _Response]
    ) -> _Response:
        if self._slots <= 0:
            raise _Busy("busy, retry")
        try:
            future = loop.run_in_executor(self._threads, work)
        except RuntimeError:  # the pool is shut down: the server is stopping
            raise _Busy("stopping") from None
        self._slots -= 1  # only the event loop's thread counts
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise _Busy(f"no answer within {self._timeout:g}s, retry") from None
        finally:
            self._slots += 1

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


class _TooLarge(Exception):
    pass


async def _read_chunked(reader: asyncio.StreamReader, max_body: int, keep: bool = True) -> bytes:
    """A `Transfer-Encoding: chunked` body (RFC 9112 7.1), at most `max_body` bytes;
    `keep=False` reads it and keeps nothing."""
    body = bytearray()
    received = 0
    while True:
        line = await reader.readline()
        if len(line) > _CHUNK_LINE or not line.endswith(b"\n"):
            raise ValueError("bad chunk size line")
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ValueError("bad chunk size") from None
        if size < 0:
            raise ValueError("bad chunk size")
        if size == 0:
            break
        received += size
        if received > max_body:
            raise _TooLarge
        if keep:
            body += await reader.readexactly(size)
        else:
            await _discard(reader, size)
        if await reader.readline() not in (b"\r\n", b"\n"):
            raise ValueError("truncated chunk")
    for _ in range(_MAX_TRAILERS):
        if await reader.readline() in (b"\r\n", b"\n", b""):
            return bytes(body)
    raise ValueError("too many trailer lines")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


def _match(routes: Mapping[str, PostHandler], path: str) -> tuple[PostHandler, str | None] | None:
    """The handler for `path` and the entity it names: exact paths first, then
    ".../{entity}" templates, whose entity is one non-empty path segment."""
    handler = routes.get(path)
    if handler is not None and not path.endswith(ENTITY):
        return handler, None
    for pattern, candidate in routes.items():
        if not pattern.endswith("/" + ENTITY):
            continue
        prefix = pattern[: -len(ENTITY)]
        rest = path[len(prefix) :] if path.startswith(prefix) else ""
        if rest and "/" not in rest:
            return candidate, unquote(rest)
    return None
