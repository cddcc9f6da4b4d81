"""Reading a request's head: the request line and the headers, within `max_head` bytes
and `max_headers` lines (the caller bounds the time), and what the server knows of a
request while answering it."""

from __future__ import annotations

import asyncio
import http.client
import io
import re
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from urllib.parse import urlsplit

from syncd.http.responses import Response, error

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a token (RFC 9110)
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_BLANK = (b"\r\n", b"\n")


class Refused(Exception):
    """The request cannot be served: answer `response` (and close)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Gone(Exception):
    """The client hung up: nobody to answer."""


@dataclass
class Request:
    method: str
    path: str  # the target's path, unquoted only where a route says so
    headers: Message
    client: str
    body_pending: bool = False  # a body was announced and not read yet
    linger: bool = False  # answered while the client may still be sending: see server

    def header(self, name: str) -> str:
        """Every `name` header's value, joined by commas as RFC 9110 5.3 allows."""
        return ",".join(self.headers.get_all(name) or [])

    def announces_body(self) -> bool:
        return "Transfer-Encoding" in self.headers or self.headers.get(
            "Content-Length", "0"
        ).strip() not in ("", "0")

    def expects_continue(self) -> bool:
        return self.headers.get("Expect", "").lower() == "100-continue"


def unread(client: str) -> Request:
    """Stands for a request whose head is not read yet (its answer is an error)."""
    return Request("-", "", Message(), client, linger=True)


async def read_head(
    reader: asyncio.StreamReader, client: str, max_head: int, max_headers: int
) -> Request:
    """The request line and headers. `reader`'s own limit must be `max_head`, so that a
    single line cannot be longer either."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # a line longer than the reader's limit
            status = 414 if not lines else 431
            raise Refused(error(status, HTTPStatus(status).phrase.lower())) from None
        if not line.endswith(b"\n"):
            raise Gone  # the client closed mid-head
        size += len(line)
        if size > max_head:
            raise Refused(error(431, f"request head larger than {max_head // 1024} KiB"))
        if not lines and line in _BLANK:
            continue  # RFC 9112 2.2: ignore empty lines before the request line
        if line in _BLANK:
            break
        lines.append(line)
        if len(lines) > max_headers + 1:
            raise Refused(error(431, "too many headers"))
    method, path = request_line(lines[0])
    try:
        headers = http.client.parse_headers(io.BytesIO(b"".join(lines[1:]) + b"\r\n"))
    except http.client.HTTPException:
        raise Refused(error(431, "request header fields too large")) from None
    return Request(method, path, headers, client)


def request_line(line: bytes) -> tuple[str, str]:
    """(method, path) of `METHOD SP TARGET SP HTTP/1.x`; Refused otherwise."""
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not parts[1]:
        raise Refused(error(400, "bad request line"))
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        raise Refused(error(400, "bad HTTP version"))
    if not version.startswith("HTTP/1."):
        raise Refused(error(505, "HTTP version not supported"))
    try:
        path = urlsplit(target).path
    except ValueError:  # e.g. "//[x": an authority urllib cannot read
        raise Refused(error(400, "bad request target")) from None
    return method, path


def content_length(text: str) -> int | None:
    """A Content-Length value: ASCII digits only (str.isdigit takes "²" too)."""
    text = text.strip()
    return int(text) if _DIGITS.fullmatch(text) else None
