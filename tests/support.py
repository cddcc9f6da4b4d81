"""Helpers shared by the tests that run syncd against PostgreSQL and the demo source."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from prometheus_client import CollectorRegistry

from devtools.demo_config import DEMO_ENTITIES, demo_config, dump
from devtools.demo_source import DemoSource
from syncd.config.loader import load_config
from syncd.config.model import Config
from syncd.db.schema import migrate
from syncd.metrics import Metrics
from syncd.sync.incremental import Engine, RunResult
from syncd.sync.source import SourceClient

# Starts a demo source with these DemoSource arguments: the `make_demo` fixture.
MakeDemo = Callable[..., DemoSource]
# A demo source without records: for tests that need only its configuration's shape.
NO_RECORDS = {"task": 0, "inspection": 0, "user": 0, "entity": 0}


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    every: float = 0.05,
) -> Any:
    """Poll `condition` every `every` seconds until it returns something truthy, which
    is returned; fail after `timeout` seconds.

    `what` names the awaited event in the failure. A callable is called only then, so
    that it can describe the state at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {described}")
        time.sleep(every)


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "syncd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dump(data))
    return path


def demo_setup(
    tmp_path: Path,
    dsn: str,
    demo: DemoSource,
    *,
    entities: list[str] | None = None,
    tweak: Callable[[dict[str, Any]], None] | None = None,
) -> Config:
    """Load a configuration for `demo`, after `tweak` edits its plain data."""
    # Start where the demo data starts: from the default 2000-01-01 a first run would
    # read thousands of empty one-day pieces.
    data = demo_config(dsn, demo.base_url, entities=entities, initial_from="2026-10-01 00:00:00")
    if tweak is not None:
        tweak(data)
    return load_config(write_config(tmp_path, data))


@contextmanager
def connection(dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(dsn)
    try:
        yield conn
    finally:
        conn.close()


def query(dsn: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(text, params)
        rows: list[tuple[Any, ...]] = cur.fetchall()
        conn.rollback()
        return rows


def execute(dsn: str, text: str, params: Any = None) -> None:
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(text, params)
        conn.commit()


def make_engine(
    config: Config,
    *,
    now: Callable[[], datetime] | None = None,
    sleeps: list[float] | None = None,
) -> Engine:
    """An engine with a fresh registry; sleeps are recorded instead of slept."""
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    recorded = sleeps if sleeps is not None else []
    client = SourceClient(sleep=recorded.append, observe=metrics.observe_request)
    return Engine(
        config,
        metrics,
        client=client,
        now=now or (lambda: datetime.now(UTC)),
        sleep=recorded.append,
    )


def sync_once(config: Config, entity: str, **kwargs: Any) -> RunResult:
    with connection(config.database.dsn) as conn:
        migrate(conn, config)
    return make_engine(config, **kwargs).sync_entity(entity)


def versions_in_db(dsn: str, entity: str) -> dict[Any, datetime]:
    """primary key -> modified_on, for a demo entity's table."""
    spec = DEMO_ENTITIES[entity]
    key = spec["primary_key"][0]
    rows = query(dsn, f"SELECT {key}::text, modified_on FROM {spec['table']}")
    return dict(rows)


def versions_in_source(demo: DemoSource, entity: str) -> dict[Any, datetime]:
    """primary key (as text) -> modification instant, for the demo's current data."""
    key_field = demo.key_field(entity)
    versions: dict[Any, datetime] = {}
    for record in demo.records(entity):
        key = record.get(key_field)
        if key is None:
            continue  # a bad record, made to be rejected
        try:
            versions[str(key)] = demo.modified_at(entity, key)
        except KeyError:
            continue
    return versions


def watermark(dsn: str, entity: str) -> datetime | None:
    rows = query(dsn, "SELECT watermark FROM sync_state WHERE entity = %s", (entity,))
    return rows[0][0] if rows else None


def missing_below_watermark(dsn: str, demo: DemoSource, entity: str) -> dict[Any, Any]:
    """Source records older than the watermark that the table lacks or holds stale.

    The invariant of a committed watermark: everything before it is stored."""
    mark = watermark(dsn, entity)
    if mark is None:
        return {}
    stored = versions_in_db(dsn, entity)
    return {
        key: (modified, stored.get(key))
        for key, modified in versions_in_source(demo, entity).items()
        if modified < mark and stored.get(key) != modified
    }
