"""The seam between the HTTP port and the daemon: what the daemon provides (`App`),
the shape of a POST handler, and the one exception an app call may raise to say "not
now". The server knows nothing of syncd beyond this."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

# handler(entity or None, body) -> (status, JSON object). The entity is the last path
# segment for a route registered as ".../{entity}", None for an exact path. Handlers
# block (they use the database); they run in a worker thread.
PostHandler = Callable[[str | None, bytes], tuple[int, dict[str, Any]]]


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
