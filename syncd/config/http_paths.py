"""The URL paths syncd's HTTP server answers itself, in one place.

The server routes them, the ingest code registers the push route, and the
configuration loader refuses an entity's `ingest_path` that would collide with any
of them; it lives at the bottom layer (config) so that all three can import it.
See "HTTP" and "Push ingest" in docs/operations.md.
"""

from __future__ import annotations

# Answered to GET (and HEAD), without the API key.
METRICS = "/metrics"
HEALTHZ = "/healthz"
READYZ = "/readyz"
STATUS = "/status"
GET_PATHS = (METRICS, HEALTHZ, READYZ, STATUS)

# POST routes whose last path segment names the entity; they need the API key.
ENTITY = "{entity}"
INGEST_ROUTE = "/v1/ingest/" + ENTITY  # push records for an entity
SYNC_ROUTE = "/v1/sync/" + ENTITY  # queue a run of an entity now
ENTITY_ROUTES = (INGEST_ROUTE, SYNC_ROUTE)


def is_builtin_path(path: str) -> bool:
    """A path syncd answers itself: one of GET_PATHS, or anything under the prefix of
    an entity route (`/v1/ingest/...`, `/v1/sync/...`)."""
    prefixes = tuple(route.removesuffix(ENTITY) for route in ENTITY_ROUTES)
    return path in GET_PATHS or path.startswith(prefixes)
