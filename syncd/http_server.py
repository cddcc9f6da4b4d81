"""The daemon's one HTTP port (CONTRACT §6): metrics, health, status, sync and ingest.

Standard library `http.server`, one thread per connection, one request per connection
(every answer says `Connection: close`). The port must never take the daemon down, so
everything a client controls is bounded:

- at most `max_threads` connections are served at once; the next one is answered
  `503` at once from the accept loop, without a thread, and closed;
- every socket read or write waits at most `timeout` seconds, and the request line
  and headers must all arrive within `timeout` (a slowloris client is dropped);
  a body must arrive within `body_timeout`;
- request line and header sizes are http.server's (64 KiB, 100 headers); a body is
  never buffered beyond `http.max_body`;
- an exception in a handler answers `500` and is logged; it never ends the server.

The server knows nothing of syncd beyond the `App` protocol the daemon implements."""

from __future__ import annotations

import gzip
import hmac
import io
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.config import Http

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = structlog.get_logger("syncd.http")

# handler(entity or None, body) -> (status, JSON object). The entity is the last path
# segment for a route registered as ".../{entity}", None for an exact path.
PostHandler = Callable[[str | None, bytes], tuple[int, dict[str, Any]]]

SYNC_ROUTE = "/v1/sync/{entity}"
ENTITY = "{entity}"
JSON = "application/json"
LINGER = 0.5  # seconds spent draining an unread body before closing (see _linger)
_CHUNK_LINE = 1024  # longest chunk-size line accepted in a chunked body
_MAX_TRAILERS = 100


class App(Protocol):
    """What the daemon provides."""

    def alive(self) -> bool:
        """/healthz: the main loop has ticked recently."""
        ...

    def ready(self) -> tuple[bool, str]:
        """/readyz: (ok, reason): config loaded and the database answers."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """/status: the same JSON as `syncd status --json`."""
        ...

    def trigger(self, entity: str) -> bool:
        """POST /v1/sync/{entity}: queue a run; False for an unknown entity."""
        ...

    def post_routes(self) -> Mapping[str, PostHandler]:
        """Extra POST paths (ingest), exact or ending in "/{entity}"; all need the key."""
        ...


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # each socket wait, and the whole request head
    body_timeout: float = 60.0  # the whole request body
    max_threads: int = 16  # connections served at once


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


class ServerHandle:
    """A running server: `port` is the bound port (`http.port` may be 0)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.socket.getsockname()[1]

    def shutdown(self) -> None:
        """Stop accepting and free the port. Connections being served finish on their
        own, within their time limits (their threads are daemon threads)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(
    http: Http,
    registry: CollectorRegistry,
    app: App,
    *,
    limits: Limits | None = None,
) -> ServerHandle:
    """Bind `http.host:http.port` now (OSError if it cannot) and serve from a daemon thread."""
    server = _Server(http, registry, app, limits or Limits())
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="syncd-http", daemon=True
    )
    thread.start()
    return ServerHandle(server, thread)


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


_BUSY_BODY = b'{"error": "too many open connections"}'
_BUSY = b"\r\n".join(
    [
        b"HTTP/1.1 503 Service Unavailable",
        b"Server: syncd",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(_BUSY_BODY),
        b"Retry-After: 1",
        b"Connection: close",
        b"",
        _BUSY_BODY,
    ]
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # shutdown() never waits for a client
    request_queue_size = 64

    def __init__(self, http: Http, registry: CollectorRegistry, app: App, limits: Limits) -> None:
        self.http = http
        self.registry = registry
        self.app = app
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_threads)
        self.address_family = _address_family(http.host, http.port)
        super().__init__((http.host, http.port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN: a DNS query at start.
        TCPServer.server_bind(self)
        self.server_name = self.http.host
        self.server_port = self.socket.getsockname()[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """All threads busy: answer 503 from the accept loop, never waiting on the client."""
        log.debug("http.busy", max_threads=self.limits.max_threads)
        try:
            request.setblocking(False)
            request.send(_BUSY)
            request.recv(65536)  # what already arrived, so close() does not reset
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away mid-answer
            log.debug("http.connection_error", error=str(exc))
        else:
            log.exception("http.unexpected_error")


class _DeadlineReader(io.RawIOBase):
    """A socket's read side: each read waits at most `idle` seconds, and none starts
    after `deadline` (time.monotonic), which the handler moves as the request goes on."""

    def __init__(self, sock: socket.socket, idle: float, deadline: float) -> None:
        self._sock = sock
        self._idle = idle
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request took too long")
        self._sock.settimeout(min(self._idle, left))
        return self._sock.recv_into(buffer)


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client hung up while sending its body: nobody to answer."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # for chunked request bodies; we still close after each
    server_version = "syncd"
    # Assumed for a request line without a version: answer with a status line and
    # headers, never HTTP/0.9's bare body.
    default_request_version = "HTTP/1.0"

    _reader: _DeadlineReader
    _body_pending = False

    def version_string(self) -> str:
        return self.server_version  # no Python version

    def setup(self) -> None:
        super().setup()
        limits = self.server.limits
        self.rfile.close()
        self._reader = _DeadlineReader(
            self.connection, limits.timeout, time.monotonic() + limits.timeout
        )
        self.rfile = io.BufferedReader(self._reader)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        if self._body_pending:
            self._linger()

    # -- dispatch --------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._body_pending = "Transfer-Encoding" in self.headers or self.headers.get(
            "Content-Length", "0"
        ).strip() not in ("", "0")
        try:
            response = self._route(urlsplit(self.path).path)
        except _ClientGone:
            log.debug("http.client_gone", path=self._log_path())
            return
        except Exception:
            log.exception("http.handler_failed", method=self.command, path=self._log_path())
            response = _error(500, "internal error")
        self._send(response)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _route(self, path: str) -> _Response:
        getter = _GET_ROUTES.get(path)
        if getter is not None:
            if self.command not in ("GET", "HEAD"):
                return _error(405, "method not allowed", Allow="GET, HEAD")
            return getter(self)
        app = self.server.app
        routes: dict[str, PostHandler] = {**app.post_routes(), SYNC_ROUTE: self._sync}
        match = _match(routes, path)
        if match is None:
            return _error(404, "not found")
        if self.command != "POST":
            return _error(405, "method not allowed", Allow="POST")
        denied = self._check_key()
        if denied is not None:
            return denied
        body = self._read_body()
        if isinstance(body, _Response):
            return body
        handler, entity = match
        status, payload = handler(entity, body)
        if status == 503:  # busy: tell well-behaved clients when to come back
            return _json(status, payload, **{"Retry-After": "1"})
        return _json(status, payload)

    # -- GET -------------------------------------------------------------------------

    def _metrics(self) -> _Response:
        try:
            output = generate_latest(self.server.registry)
        except Exception:
            log.exception("http.metrics_failed")
            return _error(500, "collecting metrics failed")
        accepted = {part.split(";")[0].strip() for part in self._header("Accept-Encoding")}
        if "gzip" in accepted:
            return _Response(
                200, gzip.compress(output), CONTENT_TYPE_LATEST, {"Content-Encoding": "gzip"}
            )
        return _Response(200, output, CONTENT_TYPE_LATEST)

    def _healthz(self) -> _Response:
        try:
            alive = self.server.app.alive()
        except Exception:
            log.exception("http.healthz_failed")
            alive = False
        return _json(200, {"status": "ok"}) if alive else _error(503, "main loop not alive")

    def _readyz(self) -> _Response:
        try:
            ok, reason = self.server.app.ready()
        except Exception:
            log.exception("http.readyz_failed")
            ok, reason = False, "readiness check failed"
        return _json(200, {"status": "ok"}) if ok else _error(503, reason)

    def _status(self) -> _Response:
        try:
            report = self.server.app.status()
        except Exception as exc:
            log.exception("http.status_failed")
            return _error(503, f"status unavailable: {type(exc).__name__}")
        return _json(200, report)

    # -- POST ------------------------------------------------------------------------

    def _sync(self, entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        if entity is None or not self.server.app.trigger(entity):
            return 404, {"error": f"unknown entity {entity!r}"}
        return 202, {"entity": entity, "status": "queued"}

    def _check_key(self) -> _Response | None:
        http = self.server.http
        if http.api_key is None:
            return _error(403, "forbidden: no http.api_key_file configured")
        given = self.headers.get(http.api_key_header)
        # Headers arrive decoded as Latin-1: encoding back gives the bytes sent.
        if given is None or not hmac.compare_digest(
            given.encode("latin-1", "replace"), http.api_key.reveal().encode()
        ):
            return _error(401, f"missing or wrong {http.api_key_header}")
        return None

    def _read_body(self) -> bytes | _Response:
        """The whole body, never more than `http.max_body` of it in memory."""
        max_body = self.server.http.max_body
        encoding = self.headers.get("Transfer-Encoding")
        length = self.headers.get("Content-Length")
        if encoding is not None and length is not None:
            return _error(400, "both Transfer-Encoding and Content-Length")  # smuggling
        if encoding is None and length is None:
            return b""  # RFC 9112 6.3: a request with neither has no body
        if encoding is not None and encoding.strip().lower() != "chunked":
            return _error(501, f"unsupported Transfer-Encoding {encoding!r}")
        if length is not None:
            lengths = set(self.headers.get_all("Content-Length") or [])
            if len(lengths) > 1 or not length.strip().isdigit():
                return _error(400, "bad Content-Length")
            if int(length) > max_body:
                return _error(413, f"body over {max_body} bytes")
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)  # only now that the body is wanted
            self.end_headers()
        self._reader.deadline = time.monotonic() + self.server.limits.body_timeout
        try:
            body = self._read_chunked(max_body) if length is None else self._read_exact(length)
        except _TooLarge:
            return _error(413, f"body over {max_body} bytes")
        except ValueError as exc:
            return _error(400, str(exc))
        except TimeoutError:
            return _error(408, "request body timed out")
        except ConnectionError as exc:
            raise _ClientGone from exc
        self._body_pending = False
        return body

    def _read_exact(self, length: str) -> bytes:
        body = self.rfile.read(int(length))
        if len(body) < int(length):
            raise ValueError("body shorter than Content-Length")
        return body

    def _read_chunked(self, max_body: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(_CHUNK_LINE + 1)
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
            if len(body) + size > max_body:
                raise _TooLarge
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise ValueError("truncated chunk")
            body += chunk
        for _ in range(_MAX_TRAILERS):
            if self.rfile.readline(_CHUNK_LINE + 1) in (b"\r\n", b"\n", b""):
                return bytes(body)
        raise ValueError("too many trailer lines")

    # -- answering -------------------------------------------------------------------

    def _send(self, response: _Response) -> None:
        self.connection.settimeout(self.server.limits.timeout)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def handle_expect_100(self) -> bool:
        return True  # "100 Continue" is sent by _read_body, after the key and size checks

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, headers too large, unknown
        method, ...) as JSON like ours."""
        self._body_pending = False  # we did not even parse the head: just close
        default = self.responses.get(code, ("error", ""))[0]
        headers = {"Allow": "GET, HEAD, POST"} if code == 501 else {}
        self._send(_error(code, message or default, **headers))

    def _linger(self) -> None:
        """We answered without reading the body (401, 413, ...). Closing now with unread
        data would reset the connection, and some clients then lose our answer: drain
        for a moment first, so the client reads it and closes."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            end = time.monotonic() + LINGER
            while (left := end - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    # -- logs ------------------------------------------------------------------------

    def _header(self, name: str) -> list[str]:
        return ",".join(self.headers.get_all(name) or []).split(",")

    def _log_path(self) -> str:
        # No query string. No path at all when the request line was refused.
        return urlsplit(getattr(self, "path", "")).path

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug(
            "http.request",
            method=self.command,
            path=self._log_path(),
            status=int(code) if str(code).isdigit() else code,
            client=self.client_address[0],
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http.protocol", message=format % args, client=self.client_address[0])


_GET_ROUTES: dict[str, Callable[[_Handler], _Response]] = {
    "/metrics": _Handler._metrics,
    "/healthz": _Handler._healthz,
    "/readyz": _Handler._readyz,
    "/status": _Handler._status,
}


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
