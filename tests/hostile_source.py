"""An upstream source that misbehaves on purpose, over real HTTP.

Each request is answered by a function the test gives: from the query parameters to a
`Reply` (status, headers, body) that may also be sent slowly, byte by byte, or never
finished. Bodies are bytes as sent, so they can hold what no JSON encoder writes
(nesting 100,000 deep, an integer of 5,000 digits)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Reply:
    body: bytes = b"[]"
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    drip: float | None = None  # seconds between single bytes of the whole answer
    stall_after: int | None = None  # bytes of the body sent before going silent for good


Answer = Callable[[dict[str, str]], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    answer: Answer
    requests: list[dict[str, str]]
    stop: threading.Event
    connections: set[socket.socket]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        self.server.requests.append(query)
        reply = self.server.answer(query)
        head = [f"HTTP/1.1 {reply.status} X", f"Content-Length: {len(reply.body)}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + reply.body
        try:
            if reply.stall_after is not None:
                self.wfile.write(data[: len(data) - len(reply.body) + reply.stall_after])
                self.wfile.flush()
                self.server.stop.wait()
            elif reply.drip is not None:
                for i in range(len(data)):
                    if self.server.stop.is_set():
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(reply.drip)
            else:
                self.wfile.write(data)
        except OSError:
            pass  # the client gave up: what a test of a slow source expects

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HostileSource:
    def __init__(self, answer: Answer) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.answer = answer
        self._server.requests = []
        self._server.stop = threading.Event()
        self._server.connections = set()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/records"

    @property
    def requests(self) -> list[dict[str, str]]:
        return self._server.requests

    def set_answer(self, answer: Answer) -> None:
        self._server.answer = answer

    def close(self) -> None:
        self._server.stop.set()
        self._server.shutdown()
        for sock in list(self._server.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()


@contextlib.contextmanager
def hostile_source(answer: Answer) -> Iterator[HostileSource]:
    source = HostileSource(answer)
    try:
        yield source
    finally:
        source.close()


def first_page_only(body: bytes) -> Answer:
    """`body` for offset 0, an empty page after it: a window of one page."""
    return lambda query: Reply(body if query.get("offset", "0") == "0" else b"[]")
