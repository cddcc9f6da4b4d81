"""What the server sends back: a `Response` (status, body, content type, extra
headers), JSON and error bodies, and the bytes of an answer's head.

Every answer, errors included, is JSON with `{"error": ...}` (except /metrics), says
`Server: syncd` (not the Python version) and `Connection: close`: one request per
connection."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

JSON = "application/json"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload).encode(), JSON, headers)


def error(status: int, message: str, **headers: str) -> Response:
    """The body of every error answer: `{"error": message}`."""
    return json_response(status, {"error": message}, **headers)


def retry_later(status: int, payload: Any) -> Response:
    """A 503 tells well-behaved clients when to come back."""
    return json_response(status, payload, **{"Retry-After": "1"})


def head(response: Response) -> bytes:
    """The status line and headers of `response`, up to and including the blank line."""
    lines = [
        f"HTTP/1.1 {response.status} {phrase(response.status)}",
        "Server: syncd",
        f"Date: {http_date()}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{name}: {value}" for name, value in response.headers.items()),
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


# Written as they are, without a Date, where building an answer is not worth it (a
# connection turned away) or may itself fail (the answer to a bug).
TOO_MANY_CONNECTIONS = b"".join(
    [
        b"HTTP/1.1 503 Service Unavailable\r\nServer: syncd\r\nContent-Type: application/json\r\n",
        b"Content-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        b'{"error": "too many open connections"}',
    ]
)
INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nServer: syncd\r\nContent-Type: application/json\r\n"
    b'Content-Length: 27\r\nConnection: close\r\n\r\n{"error": "internal error"}'
)
