"""Push ingest over HTTP: the routes that turn a POSTed body into an `Ingestor.ingest`
call and its outcome into an answer (docs/operations.md, "Push ingest").

The ingest package speaks in domain errors; this module alone knows their HTTP
statuses. The server in front has already checked the API key and the body's size.
"""

from __future__ import annotations

from typing import Any

from syncd.config.http_paths import INGEST_ROUTE
from syncd.config.model import Config
from syncd.http.server import PostHandler
from syncd.ingest.body import parse_records
from syncd.ingest.errors import BadBody, Busy, IngestError, UnknownEntity
from syncd.ingest.ingestor import Ingestor, IngestResult

# The most specific class first: each maps to its status, anything else is 500.
_STATUSES: tuple[tuple[type[IngestError], int], ...] = (
    (BadBody, 400),
    (UnknownEntity, 404),
    (Busy, 503),  # the server adds Retry-After
)


def ingest_paths(config: Config) -> dict[str, str | None]:
    """Every push path: the general one (None: the entity is in the path) and each
    entity's own `ingest_path`."""
    paths: dict[str, str | None] = {INGEST_ROUTE: None}
    for name, entity in config.entities.items():
        if entity.ingest_path is not None:
            paths[entity.ingest_path] = name
    return paths


def ingest_routes(ingestor: Ingestor, config: Config) -> dict[str, PostHandler]:
    """`/v1/ingest/{entity}`, and each entity's `ingest_path` bound to that entity."""
    return {path: _push(ingestor, name) for path, name in ingest_paths(config).items()}


def _push(ingestor: Ingestor, bound: str | None = None) -> PostHandler:
    """The handler of one path: the entity in the path, or `bound` for an exact one."""

    def handle(entity: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            name = ingestor.entity(bound or entity).name  # 404 before reading the body
            result = ingestor.ingest(name, parse_records(body))
        except IngestError as exc:
            return _status_of(exc), _with_run_id({"error": str(exc)}, exc.run_id)
        return 200, _answer(result)

    return handle


def _status_of(exc: IngestError) -> int:
    for kind, status in _STATUSES:
        if isinstance(exc, kind):
            return status
    return 500


def _answer(result: IngestResult) -> dict[str, Any]:
    return _with_run_id({"written": result.written, "rejected": result.rejected}, result.run_id)


def _with_run_id(body: dict[str, Any], run_id: int | None) -> dict[str, Any]:
    return body if run_id is None else {**body, "run_id": run_id}
