"""Which handler answers a request: the GET endpoints by exact path, the POST routes by
exact path or ".../{entity}" template; and the API key every POST needs, compared in
constant time. Deciding only: nothing here reads a body or calls the app."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote

from syncd.config.http_paths import ENTITY
from syncd.config.model import Http
from syncd.http.app import PostHandler
from syncd.http.request import Request
from syncd.http.responses import Response, error

KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

# A GET endpoint is answered in the event loop: it must not block (or must hand its
# blocking part to a worker pool itself).
GetEndpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Get:
    endpoint: GetEndpoint


@dataclass(frozen=True)
class Post:
    """A POST with the right key: its body is wanted."""

    handler: PostHandler
    entity: str | None


def route(
    request: Request,
    gets: Mapping[str, GetEndpoint],
    posts: Callable[[], Mapping[str, PostHandler]],
    http: Http,
) -> Response | Get | Post:
    """What answers `request`: an endpoint, or at once an error (501 unknown method,
    405 with Allow, 404, 403 without a configured key, 401 with a wrong one). `posts`
    is asked only for a path that is not a GET endpoint."""
    if request.method not in KNOWN_METHODS:
        return error(501, "method not implemented", Allow="GET, HEAD, POST")
    endpoint = gets.get(request.path)
    if endpoint is not None:
        if request.method not in ("GET", "HEAD"):
            return error(405, "method not allowed", Allow="GET, HEAD")
        return Get(endpoint)
    found = match(posts(), request.path)
    if found is None:
        return error(404, "not found")
    if request.method != "POST":
        return error(405, "method not allowed", Allow="POST")
    denied = check_key(http, request.headers)
    if denied is not None:
        return denied
    handler, entity = found
    return Post(handler, entity)


def match(routes: Mapping[str, PostHandler], path: str) -> tuple[PostHandler, str | None] | None:
    """The handler for `path` and the entity it names: exact paths first, then
    ".../{entity}" templates, whose entity is one non-empty path segment (unquoted)."""
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


def check_key(http: Http, headers: Message) -> Response | None:
    """None if `headers` carry the configured API key; else the answer: 403 when no key
    is configured (POSTs are off), 401 when it is missing or wrong. Compared with
    hmac.compare_digest, so the time taken tells nothing of the key."""
    if http.api_key is None:
        return error(403, "forbidden: no http.api_key_file configured")
    given = headers.get(http.api_key_header)
    # Headers arrive decoded as Latin-1: encoding back gives the bytes sent.
    if given is None or not hmac.compare_digest(
        given.encode("latin-1", "replace"), http.api_key.reveal().encode()
    ):
        return error(401, f"missing or wrong {http.api_key_header}")
    return None
