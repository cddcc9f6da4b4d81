"""The HTTP port through real sockets, against a fake App (the seam to the daemon);
then routing, the key check and the chunked decoder on their own. One file for all of
syncd/http (hence its length): the sockets are what the acceptance suite sees, the
pieces are where a failure is easiest to read."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
import structlog
import structlog.testing
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from syncd.config.model import Http, Secret
from syncd.http import server as server_module
from syncd.http.body import TooLarge, read_chunked
from syncd.http.routes import check_key, match
from syncd.http.server import Limits, PostHandler, ServerHandle, Unavailable, serve
from syncd.metrics import Metrics

KEY = "s3cret-Key"
WAIT = 5.0  # the longest any single socket operation in these tests may take


@dataclass
class FakeApp:
    is_alive: bool = True
    readiness: tuple[bool, str] = (True, "ready")
    report: list[dict[str, Any]] = field(default_factory=lambda: [{"entity": "task"}])
    status_error: Exception | None = None
    entities: tuple[str, ...] = ("task", "user")
    triggered: list[str] = field(default_factory=list)
    routes: dict[str, PostHandler] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.is_alive

    def ready(self) -> tuple[bool, str]:
        return self.readiness

    def status(self) -> list[dict[str, Any]]:
        if self.status_error is not None:
            raise self.status_error
        return self.report

    def trigger(self, entity: str) -> bool:
        if entity not in self.entities:
            return False
        self.triggered.append(entity)
        return True

    def post_routes(self) -> Mapping[str, PostHandler]:
        return self.routes


Start = Callable[..., ServerHandle]


@pytest.fixture
def start() -> Iterator[Start]:
    handles: list[ServerHandle] = []

    def _start(
        app: FakeApp | None = None,
        *,
        api_key: str | None = KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = 1024,
        registry: CollectorRegistry | None = None,
        limits: Limits | None = None,
    ) -> ServerHandle:
        config = Http(
            host=host,
            port=port,
            api_key=Secret(api_key) if api_key is not None else None,
            max_body=max_body,
        )
        handle = serve(config, registry or CollectorRegistry(), app or FakeApp(), limits=limits)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.shutdown()


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)


def call(
    server: ServerHandle,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Reply:
    conn = http.client.HTTPConnection(host, server.port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def raw(server: ServerHandle, data: bytes) -> bytes:
    """Send `data` as is and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def silent(server: ServerHandle) -> socket.socket:
    """A client that connects and sends nothing."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)


def keyed(**headers: str) -> dict[str, str]:
    return {"X-API-KEY": KEY, **headers}


# -- GET ---------------------------------------------------------------------------


def test_metrics_expose_the_syncd_families(start: Start) -> None:
    registry = CollectorRegistry()
    Metrics(registry).declare(["task"])
    reply = call(start(registry=registry), "GET", "/metrics")
    assert reply.status == 200
    # The text format, named as prometheus_client's own exporters name it for a client
    # that asks for nothing in particular (curl, an old Prometheus).
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = reply.body.decode()
    assert 'syncd_sync_runs_total{entity="task",kind="incremental",status="ok"} 0.0' in text
    assert 'syncd_records_written_total{entity="task"} 0.0' in text
    assert "syncd_build_info{version=" in text
    assert "_created" not in text


# What Prometheus 2.x sends by default: OpenMetrics preferred.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize("accept", ["application/openmetrics-text", PROMETHEUS_ACCEPT])
def test_metrics_are_openmetrics_when_the_client_asks_for_it(start: Start, accept: str) -> None:
    registry = CollectorRegistry()
    Metrics(registry).declare(["task"])
    reply = call(start(registry=registry), "GET", "/metrics", headers={"Accept": accept})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = reply.body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE syncd_sync_runs counter" in text
    assert 'syncd_sync_runs_total{entity="task",kind="incremental",status="ok"} 0.0' in text
    # No `_created` samples: the process turned them off (tests/conftest.py, as the
    # daemon's entry point does), in OpenMetrics as in the text format.
    assert "_created" not in text


def test_metrics_are_gzipped_when_the_client_accepts_it(start: Start) -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    reply = call(start(registry=registry), "GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    assert reply.headers["Content-Encoding"] == "gzip"
    assert b"syncd_build_info" in gzip.decompress(reply.body)
    reply = call(
        start(registry=registry),
        "GET",
        "/metrics",
        headers={"Accept": "application/openmetrics-text", "Accept-Encoding": "br, GZIP;q=0.5"},
    )
    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(reply.body).endswith(b"# EOF\n")


def test_metrics_are_plain_without_gzip_in_accept_encoding(start: Start) -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    reply = call(start(registry=registry), "GET", "/metrics", headers={"Accept-Encoding": "br"})
    assert "Content-Encoding" not in reply.headers
    assert b"syncd_build_info" in reply.body


class _Broken(Collector):
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        raise RuntimeError("collector broke")


def test_a_failing_collector_answers_500_and_the_server_goes_on(start: Start) -> None:
    registry = CollectorRegistry()
    registry.register(_Broken())
    server = start(registry=registry)
    with structlog.testing.capture_logs() as logs:
        reply = call(server, "GET", "/metrics")
    assert reply.status == 500
    assert "error" in reply.json()
    assert any(entry["event"] == "http.metrics_failed" for entry in logs)
    assert call(server, "GET", "/healthz").status == 200


@pytest.mark.parametrize(("alive", "status"), [(True, 200), (False, 503)])
def test_healthz_follows_the_main_loop(start: Start, alive: bool, status: int) -> None:
    reply = call(start(FakeApp(is_alive=alive)), "GET", "/healthz")
    assert reply.status == status
    assert set(reply.json()) == ({"status"} if alive else {"error"})


def test_readyz_answers_200_when_ready_and_503_with_the_reason(start: Start) -> None:
    app = FakeApp()
    server = start(app)
    assert call(server, "GET", "/readyz").status == 200
    app.readiness = (False, "database: connection refused")
    reply = call(server, "GET", "/readyz")
    assert reply.status == 503
    assert reply.json() == {"error": "database: connection refused"}


def test_status_is_the_apps_json_and_503_when_it_is_unavailable(start: Start) -> None:
    app = FakeApp(report=[{"entity": "task", "watermark": None}])
    server = start(app)
    reply = call(server, "GET", "/status")
    assert (reply.status, reply.json()) == (200, [{"entity": "task", "watermark": None}])
    app.status_error = Unavailable("database: connection refused")
    reply = call(server, "GET", "/status")
    assert (reply.status, reply.json()) == (503, {"error": "database: connection refused"})
    assert reply.headers["Retry-After"] == "1"


def test_an_unavailable_status_is_one_warning_not_a_traceback_per_request(start: Start) -> None:
    """A database outage while a dashboard polls /status: one warning line a minute."""
    server = start(FakeApp(status_error=Unavailable("database: connection refused")))
    with structlog.testing.capture_logs() as logs:
        for _ in range(20):
            assert call(server, "GET", "/status").status == 503
    warnings = [entry for entry in logs if entry["log_level"] != "debug"]
    assert [(entry["event"], entry["log_level"]) for entry in warnings] == [
        ("http.unavailable", "warning")
    ]
    assert warnings[0]["reason"] == "database: connection refused"
    assert "exc_info" not in warnings[0]


def test_a_failing_status_is_500_and_logged_with_its_traceback(start: Start) -> None:
    server = start(FakeApp(status_error=RuntimeError("a bug")))
    with structlog.testing.capture_logs() as logs:
        reply = call(server, "GET", "/status")
    assert (reply.status, reply.json()) == (500, {"error": "internal error"})
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "http.handler_failed"
    ]


def test_the_server_header_does_not_name_python(start: Start) -> None:
    reply = call(start(), "GET", "/healthz")
    assert reply.headers["Server"] == "syncd"


def test_head_answers_headers_only(start: Start) -> None:
    reply = call(start(), "HEAD", "/healthz")
    assert reply.status == 200
    assert reply.body == b""


# -- POST and auth -----------------------------------------------------------------


def test_sync_with_the_right_key_is_queued(start: Start) -> None:
    app = FakeApp()
    reply = call(start(app), "POST", "/v1/sync/task", headers=keyed())
    assert (reply.status, reply.json()) == (202, {"entity": "task", "status": "queued"})
    assert app.triggered == ["task"]


@pytest.mark.parametrize(
    "headers",
    [{"X-API-KEY": "wrong"}, {"X-API-KEY": KEY + "x"}, {"X-API-KEY": "ключ"}, {}],
    ids=["wrong", "longer", "non-ascii", "missing"],
)
def test_sync_with_a_wrong_or_missing_key_is_401(start: Start, headers: dict[str, str]) -> None:
    app = FakeApp()
    encoded = {name: value.encode().decode("latin-1") for name, value in headers.items()}
    reply = call(start(app), "POST", "/v1/sync/task", headers=encoded)
    assert reply.status == 401
    assert "error" in reply.json()
    assert KEY.encode() not in reply.body
    assert app.triggered == []


def test_sync_without_a_configured_key_is_403(start: Start) -> None:
    reply = call(start(api_key=None), "POST", "/v1/sync/task", headers=keyed())
    assert reply.status == 403
    assert "api_key_file" in reply.json()["error"]


def test_sync_of_an_unknown_entity_is_404(start: Start) -> None:
    reply = call(start(), "POST", "/v1/sync/nope", headers=keyed())
    assert reply.status == 404
    assert "nope" in reply.json()["error"]


def test_extra_post_routes_get_the_entity_or_none_and_the_body(start: Start) -> None:
    seen: list[tuple[str | None, bytes]] = []

    def ingest(entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        seen.append((entity, body))
        return 200, {"written": 1, "rejected": 0}

    app = FakeApp(routes={"/v1/ingest/{entity}": ingest, "/insertTaskDetailsBulk": ingest})
    server = start(app)
    assert call(server, "POST", "/v1/ingest/task", b"[1]", keyed()).json() == {
        "written": 1,
        "rejected": 0,
    }
    assert call(server, "POST", "/insertTaskDetailsBulk", b"[2]", keyed()).status == 200
    assert call(server, "POST", "/v1/ingest/task/extra", b"[3]", keyed()).status == 404
    assert call(server, "POST", "/v1/ingest/task", b"[4]").status == 401
    assert seen == [("task", b"[1]"), (None, b"[2]")]


def test_a_wrong_method_is_405_with_allow(start: Start) -> None:
    server = start()
    reply = call(server, "POST", "/metrics", b"", keyed())
    assert (reply.status, reply.headers["Allow"]) == (405, "GET, HEAD")
    reply = call(server, "GET", "/v1/sync/task")
    assert (reply.status, reply.headers["Allow"]) == (405, "POST")
    assert "error" in reply.json()


def test_an_unknown_path_is_404(start: Start) -> None:
    reply = call(start(), "GET", "/nowhere")
    assert reply.status == 404
    assert "error" in reply.json()


def test_an_unknown_method_is_answered_in_json(start: Start) -> None:
    reply = raw(start(), b"BREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 501 ")
    assert b'{"error": ' in reply


def test_an_oversized_request_line_or_header_is_answered_in_json(start: Start) -> None:
    server = start()
    reply = raw(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 414 ")
    assert reply.endswith(b"}")
    reply = raw(server, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert raw(server, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")


# -- bodies ------------------------------------------------------------------------


def _echo_app() -> FakeApp:
    def echo(_entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        return 200, {"size": len(body)}

    return FakeApp(routes={"/echo": echo})


def test_a_body_of_max_body_bytes_is_accepted_both_ways(start: Start) -> None:
    server = start(_echo_app(), max_body=1024)
    assert call(server, "POST", "/echo", b"x" * 1024, keyed()).json() == {"size": 1024}
    chunks = iter([b"x" * 1000, b"x" * 24])
    assert call(server, "POST", "/echo", chunks, keyed()).json() == {"size": 1024}


def test_a_body_over_max_body_is_413_with_content_length(start: Start) -> None:
    reply = call(start(_echo_app(), max_body=1024), "POST", "/echo", b"x" * 1025, keyed())
    assert reply.status == 413
    assert "error" in reply.json()


def test_413_comes_from_content_length_before_any_body_is_sent(start: Start) -> None:
    head = (
        f"POST /echo HTTP/1.1\r\nHost: x\r\nX-API-KEY: {KEY}\r\nContent-Length: 999999999\r\n\r\n"
    )
    reply = raw(start(_echo_app()), head.encode())
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_a_chunked_body_over_max_body_is_413(start: Start) -> None:
    chunks = iter([b"x" * 600, b"x" * 600])
    reply = call(start(_echo_app(), max_body=1024), "POST", "/echo", chunks, keyed())
    assert reply.status == 413


def test_a_malformed_chunked_body_is_400(start: Start) -> None:
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nX-API-KEY: {KEY}\r\nTransfer-Encoding: chunked\r\n"
    reply = raw(start(_echo_app()), head.encode() + b"\r\nzz\r\nxx\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_a_post_without_content_length_has_an_empty_body(start: Start) -> None:
    """RFC 9112: neither Content-Length nor Transfer-Encoding means no body (curl -X POST)."""
    reply = raw(
        start(), f"POST /v1/sync/task HTTP/1.1\r\nHost: x\r\nX-API-KEY: {KEY}\r\n\r\n".encode()
    )
    assert reply.startswith(b"HTTP/1.1 202 "), reply


def test_100_continue_is_sent_only_after_the_key_is_checked(start: Start) -> None:
    server = start(_echo_app())
    head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
    assert raw(server, f"{head}X-API-KEY: wrong\r\n\r\n".encode()).startswith(b"HTTP/1.1 401 ")
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(f"{head}X-API-KEY: {KEY}\r\n\r\n".encode())
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"[]")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


# -- robustness --------------------------------------------------------------------

FAST = Limits(head_timeout=0.3, body_timeout=0.6, send_timeout=0.6)


def test_a_silent_client_blocks_nobody_and_is_dropped_after_the_timeout(start: Start) -> None:
    server = start(limits=Limits(head_timeout=0.3))
    with silent(server) as idle:
        began = time.monotonic()
        assert call(server, "GET", "/healthz").status == 200
        # Answered 408 and closed by the server (the socket's own limit is WAIT).
        assert read_until_closed(idle).startswith(b"HTTP/1.1 408 ")
        assert 0.25 < time.monotonic() - began < 2


def test_a_client_dripping_its_headers_is_dropped_at_the_head_deadline(start: Start) -> None:
    server = start(limits=Limits(head_timeout=0.3))
    with silent(server) as drip:
        drip.sendall(b"GET /healthz HTTP/1.1\r\n")
        began = time.monotonic()
        try:
            while time.monotonic() - began < 2:  # each byte well inside the idle timeout
                drip.sendall(b"X")
                time.sleep(0.05)
        except OSError:
            pass  # reset by the server: dropped
        else:
            pytest.fail("the server kept a dripping client for 2 s")
        assert time.monotonic() - began < 1.5


@pytest.mark.parametrize("clients", [16, 200])
def test_slow_clients_never_keep_healthz_from_answering(start: Start, clients: int) -> None:
    """Slowloris: sockets that send half a request head and then trickle hold no
    thread; a probe among them answers at once, every time."""
    server = start()
    sockets = [silent(server) for _ in range(clients)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        for _ in range(20):
            began = time.monotonic()
            assert call(server, "GET", "/healthz").status == 200
            assert time.monotonic() - began < 1
            for sock in sockets[:50]:
                sock.sendall(b"a")
    finally:
        for sock in sockets:
            sock.close()


def test_past_the_connection_limit_the_oldest_slow_client_makes_room(start: Start) -> None:
    server = start(limits=Limits(max_connections=4))
    sockets = [silent(server) for _ in range(10)]
    try:
        assert call(server, "GET", "/healthz").status == 200
        assert sockets[0].recv(1) == b""  # the oldest were dropped
    finally:
        for sock in sockets:
            sock.close()


def test_a_request_head_over_64_kib_is_431_however_it_is_split(start: Start) -> None:
    """99 headers of 65 KB each were accepted, and kept in memory: the head is capped
    as a whole."""
    server = start()
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    assert raw(server, b"GET /healthz HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    huge = b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 65000) for i in range(99))
    assert raw(server, b"GET /healthz HTTP/1.1\r\n" + huge + b"\r\n").startswith(b"HTTP/1.1 431 ")
    assert call(server, "GET", "/healthz").status == 200


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/echo", {"X-API-KEY": "wrong"}, 401),
        ("/nowhere", {"X-API-KEY": KEY}, 404),
        ("/v1/sync/nope", {"X-API-KEY": KEY}, 404),
        ("/starting", {"X-API-KEY": KEY}, 503),
    ],
)
def test_an_answer_given_before_the_body_still_reaches_a_client_sending_it(
    start: Start, path: str, headers: dict[str, str], status: int
) -> None:
    """The body is read (and dropped) before answering: a client still sending sees the
    answer, not a broken pipe. (A push refused 503 mid-body once got a broken pipe.)"""

    def starting(_entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        raise Unavailable("starting: waiting for the database")

    app = _echo_app()
    app.routes["/starting"] = starting
    server = start(app, max_body=4 * 1024 * 1024)
    body = b"[" + b"1," * (1024 * 1024) + b"1]"
    assert call(server, "POST", path, body, headers).status == status


def test_a_body_sent_too_slowly_is_408(start: Start) -> None:
    server = start(_echo_app(), limits=FAST)
    head = f"POST /echo HTTP/1.1\r\nHost: x\r\nX-API-KEY: {KEY}\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(head.encode())
        sock.sendall(b"x")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_handler_that_raises_is_500_and_the_server_goes_on(start: Start) -> None:
    def broken(_entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("boom")

    server = start(FakeApp(routes={"/broken": broken}))
    with structlog.testing.capture_logs() as logs:
        reply = call(server, "POST", "/broken", b"[]", keyed())
    assert (reply.status, reply.json()) == (500, {"error": "internal error"})
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "http.handler_failed"
    ]
    assert call(server, "GET", "/healthz").status == 200


def test_shutdown_is_prompt_with_a_client_connected_and_frees_the_port(start: Start) -> None:
    server = start()
    port = server.port
    with silent(server):
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    again = start(port=port)
    assert call(again, "GET", "/healthz").status == 200


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_listen_address_works(start: Start) -> None:
    server = start(host="::1")
    assert call(server, "GET", "/healthz", host="::1").status == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET //[x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    ],
    ids=["unreadable-target", "superscript-length", "length-beyond-int64"],
)
def test_odd_requests_are_answered_not_logged_as_bugs(
    start: Start, request_bytes: bytes, status: int
) -> None:
    server = start(_echo_app())
    with structlog.testing.capture_logs() as logs:
        reply = raw(
            server, request_bytes.replace(b"Host: x", b"Host: x\r\nX-API-KEY: " + KEY.encode())
        )
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply
    assert [entry for entry in logs if entry["log_level"] == "error"] == []


def test_a_body_nobody_needs_is_dropped_without_being_kept(start: Start) -> None:
    """16 MiB to an unknown path without a key: read in 64 KiB steps and forgotten."""
    server = start(_echo_app(), max_body=16 * 1024 * 1024)
    reply = call(server, "POST", "/nowhere", b"x" * (16 * 1024 * 1024))
    assert reply.status == 404


class _SlowApp(FakeApp):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def status(self) -> list[dict[str, Any]]:
        time.sleep(self.seconds)
        return self.report


def test_an_app_call_that_takes_too_long_is_503_and_the_wait_is_bounded(start: Start) -> None:
    server = start(_SlowApp(2.0), limits=Limits(call_timeout=0.3))
    began = time.monotonic()
    reply = call(server, "GET", "/status")
    assert (reply.status, reply.json()) == (503, {"error": "no answer within 0.3s, retry"})
    assert time.monotonic() - began < 1.5
    assert call(server, "GET", "/healthz").status == 200


def test_past_the_queue_app_calls_are_503_at_once(start: Start) -> None:
    server = start(_SlowApp(1.0), limits=Limits(workers=1, queued=2))
    replies: list[int] = []

    def ask() -> None:
        replies.append(call(server, "GET", "/status").status)

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(replies) == [200, 200, 503, 503, 503], replies
    assert call(server, "GET", "/healthz").status == 200


def test_with_every_connection_doing_real_work_a_new_one_is_503_at_once(start: Start) -> None:
    """The limit holds: real work is not dropped for a newcomer, who is told to retry."""
    server = start(_SlowApp(1.5), limits=Limits(max_connections=3, workers=4))
    threads = [threading.Thread(target=call, args=(server, "GET", "/status")) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # all three are waiting for their status: not droppable
    reply = call(server, "GET", "/healthz")
    assert (reply.status, reply.json()) == (503, {"error": "too many open connections"})
    for thread in threads:
        thread.join(10)
    assert call(server, "GET", "/healthz").status == 200


# -- routing, without a socket -----------------------------------------------------


def _handler(name: str) -> PostHandler:
    def handle(_entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        return 200, {"handler": name}

    return handle


def test_post_routes_match_an_exact_path_first_then_one_entity_segment() -> None:
    exact, template = _handler("exact"), _handler("template")
    routes = {"/v1/ingest/{entity}": template, "/v1/ingest/special": exact}
    assert match(routes, "/v1/ingest/special") == (exact, None)
    assert match(routes, "/v1/ingest/task") == (template, "task")
    assert match(routes, "/v1/ingest/t%C3%A4sk") == (template, "täsk")
    assert match(routes, "/v1/ingest/") is None
    assert match(routes, "/v1/ingest/task/more") is None
    assert match(routes, "/v1/ingest/{entity}") == (template, "{entity}")


def test_the_key_check_answers_403_without_a_key_and_401_for_a_wrong_one() -> None:
    def headers(**values: str) -> Message:
        message = Message()
        for name, value in values.items():
            message[name.replace("_", "-")] = value
        return message

    keyed_http = Http(api_key=Secret(KEY))
    assert check_key(keyed_http, headers(X_API_KEY=KEY)) is None
    wrong = check_key(keyed_http, headers(X_API_KEY=KEY + "x"))
    assert wrong is not None and wrong.status == 401
    missing = check_key(keyed_http, headers())
    assert missing is not None and missing.status == 401
    unset = check_key(Http(api_key=None), headers(X_API_KEY=KEY))
    assert unset is not None and unset.status == 403


# -- the chunked decoder, without a socket -----------------------------------------


def _chunked(data: bytes, max_body: int = 1024, keep: bool = True) -> bytes:
    async def read() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_chunked(reader, max_body, keep=keep)

    return asyncio.run(read())


def test_a_chunked_body_is_joined_with_extensions_and_trailers_skipped() -> None:
    data = b"3;name=value\r\nabc\r\n2\nde\n0\r\nX-Trailer: 1\r\n\r\n"
    assert _chunked(data) == b"abcde"
    assert _chunked(data, keep=False) == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"zz\r\nxx\r\n0\r\n\r\n", "bad chunk size"),
        (b"-1\r\nx\r\n0\r\n\r\n", "bad chunk size"),
        (b"3\r\nabcX\r\n0\r\n\r\n", "truncated chunk"),
        (b"1" * 2000 + b"\r\n", "bad chunk size line"),
        (b"0\r\n" + b"X: 1\r\n" * 101, "too many trailer lines"),
    ],
)
def test_a_malformed_chunked_body_says_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        _chunked(data)


def test_a_chunked_body_past_max_body_is_refused_before_it_is_read() -> None:
    with pytest.raises(TooLarge):
        _chunked(b"400\r\n", max_body=1023)  # the chunk's data never arrives


def test_an_error_inside_the_event_loop_is_a_json_log_event_not_stderr_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """asyncio prints callback errors to stderr as text unless the loop has a handler;
    a journal of JSON lines must not get one such line when a connection is cancelled."""
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(server_module._log_loop_error)

        def broken() -> None:
            raise RuntimeError("callback failed")

        with structlog.testing.capture_logs() as logged:
            loop.call_soon(broken)
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert [e["event"] for e in logged] == ["http.loop_error"]
    assert "callback failed" in logged[0]["error"]
    assert capsys.readouterr().err == ""
