"""Reading a request body: by Content-Length or chunked (RFC 9112 7.1), never more than
`max_body` bytes of it in memory and within `timeout` seconds; and reading and dropping
a body the answer does not need, so that the client, still sending, reads the answer
instead of a reset."""

from __future__ import annotations

import asyncio
import contextlib

from syncd.http.request import Gone, Refused, Request, content_length
from syncd.http.responses import error

_CHUNK_LINE = 1024  # longest chunk-size line accepted in a chunked body
_MAX_TRAILERS = 100
_STEP = 65536  # bytes read at once from a body that is not kept


class TooLarge(Exception):
    """A chunked body went past `max_body`."""


async def read_body(
    request: Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_body: int,
    timeout: float,
) -> bytes:
    """The whole body; Refused with the answer when it cannot be had (the client may
    still be sending then: the answer lingers), Gone when the client hung up."""
    try:
        body = await _receive(request, reader, writer, max_body, timeout)
    except Refused:
        request.body_pending, request.linger = False, True
        raise
    request.body_pending = False
    return body


async def _receive(
    request: Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_body: int,
    timeout: float,
) -> bytes:
    encoding = request.headers.get("Transfer-Encoding")
    length = request.headers.get("Content-Length")
    if encoding is not None and length is not None:
        raise Refused(error(400, "both Transfer-Encoding and Content-Length"))  # smuggling
    if encoding is None and length is None:
        return b""  # RFC 9112 6.3: a request with neither has no body
    if encoding is not None and encoding.strip().lower() != "chunked":
        raise Refused(error(501, f"unsupported Transfer-Encoding {encoding!r}"))
    if length is not None:
        lengths = set(request.headers.get_all("Content-Length") or [])
        if len(lengths) > 1 or content_length(length) is None:
            raise Refused(error(400, "bad Content-Length"))
        if int(length) > max_body:
            raise Refused(error(413, f"body over {max_body} bytes"))
    if request.expects_continue():
        # Only now that the key and the size are known good is the body wanted.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        async with asyncio.timeout(timeout):
            if length is None:
                return await read_chunked(reader, max_body)
            return await reader.readexactly(int(length))
    except TimeoutError:
        raise Refused(error(408, "request body timed out")) from None
    except asyncio.IncompleteReadError:
        raise Gone from None
    except ValueError as exc:
        raise Refused(error(400, str(exc))) from None
    except TooLarge:
        raise Refused(error(413, f"body over {max_body} bytes")) from None


async def drop_body(
    request: Request, reader: asyncio.StreamReader, max_body: int, timeout: float
) -> None:
    """Read and forget a body the answer does not need, within the body's limits. A
    client waiting for `100 Continue` has sent nothing and is not waited for; nor is
    one announcing more than `max_body`. Whatever is not read, the answer lingers for."""
    request.body_pending, request.linger = False, True
    if request.expects_continue():
        return
    length = content_length(request.headers.get("Content-Length", ""))
    if length is not None and length > max_body:
        return  # too large to wait for: answered at once, then the linger
    with contextlib.suppress(TimeoutError, ValueError, TooLarge, asyncio.IncompleteReadError):
        async with asyncio.timeout(timeout):
            if length is not None:
                await discard(reader, length)
            else:
                await read_chunked(reader, max_body, keep=False)
            request.linger = False


async def discard(reader: asyncio.StreamReader, size: int) -> None:
    """Read `size` bytes and keep none of them."""
    while size > 0:
        chunk = await reader.read(min(size, _STEP))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(chunk)


async def read_chunked(reader: asyncio.StreamReader, max_body: int, keep: bool = True) -> bytes:
    """A `Transfer-Encoding: chunked` body (RFC 9112 7.1), at most `max_body` bytes;
    `keep=False` reads it and keeps nothing. ValueError for a malformed one, TooLarge
    past `max_body`."""
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
            raise TooLarge
        if keep:
            body += await reader.readexactly(size)
        else:
            await discard(reader, size)
        if await reader.readline() not in (b"\r\n", b"\n"):
            raise ValueError("truncated chunk")
    for _ in range(_MAX_TRAILERS):
        if await reader.readline() in (b"\r\n", b"\n", b""):
            return bytes(body)
    raise ValueError("too many trailer lines")
