"""The upstream source: one HTTP GET per page, retried as the entity's `RetryPolicy`
(retry.py) decides; the rules are in docs/configuration.md (`source.retries`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import urllib3

from syncd.config.model import Entity, SourceConfig
from syncd.errors import SourceAuthError, SourceError, SourceStopped
from syncd.sync.inflight import InFlight, Requests, pool_manager
from syncd.sync.jsonrecords import BadBody, records_in
from syncd.sync.retry import AUTH_STATUSES, RetryPolicy, retry_after_seconds

_CHUNK = 64 * 1024  # bytes read (decompressed) at a time


class RequestObserver(Protocol):
    def __call__(self, entity: str, code: str, seconds: float) -> None: ...


class _Retryable(Exception):
    """One try failed in a way worth another try."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait  # seconds the source asked for (429), else None


def public_url(url: str) -> str:
    """The URL without credentials or query, fit for a log line or an error."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def with_query(url: str, params: dict[str, str]) -> str:
    """`url` with `params` added to any query it already has (urllib3's `fields=`
    would append a second `?`)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class SourceClient:
    """Fetches pages from every entity's source through one connection pool."""

    def __init__(
        self,
        *,
        pool: urllib3.PoolManager | None = None,
        sleep: Callable[[float], object] = time.sleep,
        jitter: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: RequestObserver | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        # Retries are ours (they follow the entity's RetryPolicy), so urllib3's are off.
        self.pool = pool or pool_manager(num_pools=16, maxsize=4, retries=False)
        self.requests = Requests()
        self.sleep = sleep
        self.jitter = jitter
        self.now = now
        self.observe = observe
        self.should_stop = should_stop  # a stopping daemon does not wait out retries

    def fetch_page(
        self, entity: Entity, from_text: str, to_text: str, offset: int, limit: int
    ) -> list[Any]:
        """One page of `entity`'s records in `[from_text, to_text)`, after retries."""
        source = entity.source
        params = {
            source.params.from_: from_text,
            source.params.to: to_text,
            source.params.limit: str(limit),
            source.params.offset: str(offset),
        }
        policy = RetryPolicy.of(source.retries)
        attempts = policy.attempts
        last_reason = ""
        for attempt in range(1, attempts + 1):
            try:
                return self._try_once(entity, params)
            except _Retryable as failure:
                last_reason = str(failure)
                if self.should_stop():
                    raise SourceStopped(f"{entity.name}: stopped: {last_reason}") from None
                if not policy.should_retry(attempt):
                    break
                self.sleep(policy.delay(attempt, failure.wait, self.jitter()))
                if self.should_stop():
                    raise SourceStopped(f"{entity.name}: stopped: {last_reason}") from None
        raise SourceError(
            f"{entity.name}: GET {public_url(entity.url)} failed after {attempts} "
            f"{'try' if attempts == 1 else 'tries'}: {last_reason}"
        )

    def cancel_all(self) -> None:
        """Cut every request in flight now, and fail any started later (a stop)."""
        self.requests.cut_all("cancelled: syncd is stopping")

    def _headers(self, source: SourceConfig) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if source.api_key is not None:
            headers[source.api_key_header] = source.api_key.reveal()
        return headers

    def _try_once(self, entity: Entity, params: dict[str, str]) -> list[Any]:
        """One request, from connecting to the last byte within `source.timeout`."""
        source = entity.source
        seconds = source.timeout.total_seconds()
        started = time.monotonic()
        code = "error"
        with self.requests.start(seconds) as request:
            if request.cut_because is not None:  # stopping: not even a connect
                raise _Retryable(request.cut_because)
            try:
                response = self.pool.request(
                    "GET",
                    with_query(entity.url, params),
                    headers=self._headers(source),
                    timeout=urllib3.Timeout(connect=min(seconds, 10.0), read=seconds),
                    redirect=False,
                    preload_content=False,
                )
                code = str(response.status)
                body = self._body(entity, response, request)
                if request.cut_because is not None:  # cut where the body could end
                    raise _Retryable(request.cut_because)
            except urllib3.exceptions.HTTPError as exc:
                if request.cut_because is not None:
                    raise _Retryable(request.cut_because) from None
                raise _Retryable(f"{type(exc).__name__}: {_short(exc)}") from None
            finally:
                if self.observe is not None:
                    self.observe(entity.name, code, time.monotonic() - started)
        return self._decode(entity, body)

    def _decode(self, entity: Entity, body: bytearray) -> list[Any]:
        try:
            return records_in(body, entity.source.records_path)
        except BadBody as exc:
            raise _Retryable(f"the body is not the expected JSON ({_short(exc)})") from None

    def _body(
        self, entity: Entity, response: urllib3.BaseHTTPResponse, request: InFlight
    ) -> bytearray:
        """The page's body, decompressed, or the error its status means. A body over
        `source.max_page_bytes` is refused as it arrives, before it fills memory."""
        complete = False
        try:
            self._check_status(entity, response)
            limit = entity.source.page_bytes_limit
            body = bytearray()
            for chunk in response.stream(_CHUNK, decode_content=True):
                body += chunk
                if len(body) > limit:
                    raise SourceError(
                        f"{entity.name}: GET {public_url(entity.url)} sent a page of more "
                        f"than {limit:,} bytes (source.max_page_bytes): refused, it cannot "
                        "be a page of page_size records of any sane size"
                    )
            complete = True
            return body
        finally:
            request.done()  # before the connection can go to another request
            if not complete:
                # Unread bytes would be taken for the next answer on this connection.
                response.close()
            response.release_conn()

    def _check_status(self, entity: Entity, response: urllib3.BaseHTTPResponse) -> None:
        status = response.status
        if status in AUTH_STATUSES:
            raise SourceAuthError(
                f"{entity.name}: the source answered {status} for GET "
                f"{public_url(entity.url)}: its API key is wrong or missing "
                f"(header {entity.source.api_key_header}; see source.api_key_file or "
                "source.api_key_env)"
            )
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"), self.now())
            raise _Retryable("429 Too Many Requests", wait=wait)
        if RetryPolicy.retryable_status(status):
            raise _Retryable(f"HTTP {status}")
        if status != 200:
            raise SourceError(
                f"{entity.name}: the source answered {status} for GET "
                f"{public_url(entity.url)}; check the entity's url and source.params"
            )


def _short(exc: BaseException) -> str:
    """An exception's message on one short line (urllib3 nests long reprs)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
