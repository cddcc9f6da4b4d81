"""What each path answers: /metrics and /healthz in the event loop itself (they never
wait for a database call), /readyz and /status in the read pool, POSTs (sync requests
and the app's pushes) in the write pool. Reads and writes wait in separate pools, so a
slow push never delays a readiness probe.

An app call that raises Unavailable, finds its pool full or takes longer than the
pool's timeout answers 503 with Retry-After, and a warning at most once a minute per
path; any other exception answers 500 and is logged with its traceback."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from syncd.config import http_paths as paths
from syncd.config.http_paths import SYNC_ROUTE
from syncd.http.app import App, PostHandler, Unavailable
from syncd.http.ratelimit import RateLimited
from syncd.http.request import Request
from syncd.http.responses import Response, error, json_response, retry_later
from syncd.http.routes import GetEndpoint
from syncd.http.workers import Busy, Pool

log = structlog.get_logger("syncd.http")


def scrape(registry: CollectorRegistry, accept: str, accept_encoding: str) -> Response:
    """The registry in the format `accept` asks for (OpenMetrics for
    `application/openmetrics-text`, the Prometheus text format otherwise), gzipped if
    `accept_encoding` allows: prometheus_client's own negotiation."""
    encoder, content_type = choose_encoder(accept)
    try:
        output = encoder(registry)
    except Exception:
        log.exception("http.metrics_failed")
        return error(500, "collecting metrics failed")
    if gzip_accepted(accept_encoding):
        return Response(200, gzip.compress(output), content_type, {"Content-Encoding": "gzip"})
    return Response(200, output, content_type)


class Endpoints:
    def __init__(
        self,
        registry: CollectorRegistry,
        app: App,
        loop: asyncio.AbstractEventLoop,
        *,
        reads: Pool,
        writes: Pool,
        rate: RateLimited,
    ) -> None:
        self.registry = registry
        self.app = app
        self._loop = loop
        self._reads = reads
        self._writes = writes
        self._rate = rate
        self.gets: Mapping[str, GetEndpoint] = {
            paths.METRICS: self.metrics,
            paths.HEALTHZ: self.healthz,
            paths.READYZ: self.readyz,
            paths.STATUS: self.status,
        }

    def posts(self) -> Mapping[str, PostHandler]:
        """The app's POST routes, which may change with a reload, and the sync route."""
        return {**self.app.post_routes(), SYNC_ROUTE: self.sync}

    # -- GET -------------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        return scrape(self.registry, request.header("Accept"), request.header("Accept-Encoding"))

    async def healthz(self, request: Request) -> Response:
        try:
            alive = self.app.alive()
        except Exception:
            log.exception("http.healthz_failed")
            alive = False
        return json_response(200, {"status": "ok"}) if alive else error(503, "main loop not alive")

    async def readyz(self, request: Request) -> Response:
        def ready() -> Response:
            ok, reason = self.app.ready()
            return json_response(200, {"status": "ok"}) if ok else error(503, reason)

        return await self._call(self._reads, request, ready)

    async def status(self, request: Request) -> Response:
        return await self._call(self._reads, request, lambda: json_response(200, self.app.status()))

    # -- POST ------------------------------------------------------------------------

    async def post(
        self, request: Request, handler: PostHandler, entity: str | None, body: bytes
    ) -> Response:
        """`handler` with the request's entity and body, in the write pool."""

        def work() -> Response:
            status, payload = handler(entity, body)
            if status == 503:  # busy
                return retry_later(status, payload)
            return json_response(status, payload)

        return await self._call(self._writes, request, work)

    def sync(self, entity: str | None, _body: bytes) -> tuple[int, dict[str, Any]]:
        """POST /v1/sync/{entity}: queue a run of the entity."""
        if entity is None or not self.app.trigger(entity):
            return 404, {"error": f"unknown entity {entity!r}"}
        return 202, {"entity": entity, "status": "queued"}

    # -- calling the app -------------------------------------------------------------

    async def _call(self, pool: Pool, request: Request, work: Callable[[], Response]) -> Response:
        """`work` in a pool thread: its answer; 503 for Unavailable, for a full pool, or
        when it takes too long; 500 for a bug."""
        try:
            return await pool.run(self._loop, work)
        except (Unavailable, Busy) as exc:
            return self._unavailable(request, str(exc))
        except Exception:
            log.exception("http.handler_failed", method=request.method, path=request.path)
            return error(500, "internal error")

    def _unavailable(self, request: Request, reason: str) -> Response:
        fields = self._rate.due(request.path)
        if fields is not None:
            log.warning("http.unavailable", path=request.path, reason=reason, **fields)
        return error(503, reason, **{"Retry-After": "1"})
