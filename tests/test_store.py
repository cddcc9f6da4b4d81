"""Upserts on both paths (execute_values for small batches, COPY for large ones)
against a real PostgreSQL: the update rule, counts, rejects and no needless writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.config.model import Column, Config, Database, Entity, Http, SchedulerConfig, SourceConfig
from syncd.db.rows import Reject, Row
from syncd.db.schema import migrate
from syncd.db.store import COPY_MIN_ROWS, EntityStore
from syncd.sync.records import RowBuilder
from tests.support import query

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = {"execute_values": 5, "copy": COPY_MIN_ROWS + 5}


def make_entity(**overrides: Any) -> Entity:
    fields: dict[str, Any] = {
        "name": "thing",
        "url": "http://localhost/x",
        "table": "things",
        "primary_key": ("id",),
        "columns": (
            Column("id", ("Id",), "bigint"),
            Column("title", ("Title",), "text"),
            Column("payload", ("Payload",), "jsonb"),
            Column("modified", ("Modified",), "timestamptz"),
        ),
        "source": SourceConfig(),
        "version_column": "modified",
    }
    fields.update(overrides)
    return Entity(**fields)


@pytest.fixture
def conn(pg_conn: Any) -> Any:
    return pg_conn


def setup(conn: Any, entity: Entity) -> EntityStore:
    config = Config(
        path=__file__,  # type: ignore[arg-type]
        database=Database(dsn=""),
        http=Http(),
        source=SourceConfig(),
        scheduler=SchedulerConfig(),
        entities={entity.name: entity},
    )
    migrate(conn, config)
    return EntityStore(entity, "public")


def records(count: int, *, title: str = "t", at: datetime = T0, start: int = 0) -> list[Any]:
    return [
        {"Id": i, "Title": f"{title}{i}", "Payload": {"n": i}, "Modified": at.isoformat()}
        for i in range(start, start + count)
    ]


def upsert(
    conn: Any,
    entity: Entity,
    store: EntityStore,
    batch: list[Any],
    patch: Callable[[int, Row], Row] | None = None,
) -> tuple[int, list[Reject]]:
    """Build the rows of `batch` (each changed by `patch`, if given) and upsert them."""
    builder = RowBuilder(entity)
    pairs = []
    for index, record in enumerate(batch):
        row = builder.build(record)
        assert not isinstance(row, Reject), row
        pairs.append((record, patch(index, row) if patch else row))
    with conn.cursor() as cur:
        result = store.upsert(cur, pairs)
    conn.commit()
    return result.written, result.rejects


@pytest.mark.parametrize("path", SIZES)
def test_new_rows_are_counted_and_an_identical_batch_rewrites_nothing(
    conn: Any, pg_dsn: str, path: str
) -> None:
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])
    assert upsert(conn, entity, store, batch) == (len(batch), [])
    before = query(pg_dsn, "SELECT id, xmin::text FROM things ORDER BY id")

    assert upsert(conn, entity, store, batch) == (0, [])
    assert query(pg_dsn, "SELECT id, xmin::text FROM things ORDER BY id") == before


def test_the_copy_path_does_not_even_lock_unchanged_rows(conn: Any, pg_dsn: str) -> None:
    """No row lock, so no WAL for a re-read of unchanged data."""
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES["copy"])
    upsert(conn, entity, store, batch)
    upsert(conn, entity, store, batch)
    [(locked,)] = query(pg_dsn, "SELECT count(*) FROM things WHERE xmax::text <> '0'")
    assert locked == 0


@pytest.mark.parametrize("path", SIZES)
def test_changed_rows_are_updated_and_counted(conn: Any, pg_dsn: str, path: str) -> None:
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])
    upsert(conn, entity, store, batch)
    batch[1] = {**batch[1], "Title": "changed", "Modified": (T0 + timedelta(seconds=1)).isoformat()}
    assert upsert(conn, entity, store, batch) == (1, [])
    assert query(pg_dsn, "SELECT title FROM things WHERE id = 1") == [("changed",)]


@pytest.mark.parametrize("path", SIZES)
def test_an_older_version_never_replaces_a_newer_row_and_a_tie_does(
    conn: Any, pg_dsn: str, path: str
) -> None:
    entity = make_entity()
    store = setup(conn, entity)
    upsert(conn, entity, store, records(SIZES[path], title="new", at=T0))
    older = records(SIZES[path], title="old", at=T0 - timedelta(hours=1))
    assert upsert(conn, entity, store, older) == (0, [])
    tie = records(SIZES[path], title="fix", at=T0)
    assert upsert(conn, entity, store, tie) == (SIZES[path], [])
    assert query(pg_dsn, "SELECT DISTINCT left(title, 3) FROM things") == [("fix",)]


@pytest.mark.parametrize("path", SIZES)
def test_a_row_postgresql_refuses_is_rejected_alone(conn: Any, pg_dsn: str, path: str) -> None:
    """jsonb cannot hold \\u0000: PostgreSQL refuses it, the rest of the batch lands.
    (The row builder rejects such a value first; this is the store's own safety net.)"""
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])

    def poison(index: int, row: Row) -> Row:
        if index != 3:
            return row
        return (*row[:2], '{"bad": "a\\u0000b"}', *row[3:])

    written, rejects = upsert(conn, entity, store, batch, poison)
    assert written == len(batch) - 1
    assert [r.record["Id"] for r in rejects] == [3]
    assert rejects[0].reason.startswith("PostgreSQL refused the row: ")
    [(count,)] = query(pg_dsn, "SELECT count(*) FROM things")
    assert count == len(batch) - 1


@pytest.mark.parametrize("path", SIZES)
def test_a_key_twice_in_one_batch_keeps_the_newer_version(
    conn: Any, pg_dsn: str, path: str
) -> None:
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])
    batch.append({**batch[0], "Title": "later but older", "Modified": "2025-01-01T00:00:00Z"})
    batch.append({**batch[1], "Title": "later and newer", "Modified": "2027-01-01T00:00:00Z"})
    assert upsert(conn, entity, store, batch)[0] == SIZES[path]
    assert query(pg_dsn, "SELECT id, title FROM things WHERE id < 2 ORDER BY id") == [
        (0, "t0"),
        (1, "later and newer"),
    ]


@pytest.mark.parametrize("path", SIZES)
def test_text_with_copy_special_characters_round_trips(conn: Any, pg_dsn: str, path: str) -> None:
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])
    tricky = "tab\there\nnewline\\backslash\r\\N \u00e9\U0001f600"
    batch[2]["Title"] = tricky
    batch[2]["Payload"] = {"s": tricky, "nested": [None, True, 1.5]}
    upsert(conn, entity, store, batch)
    assert query(pg_dsn, "SELECT title, payload FROM things WHERE id = 2") == [
        (tricky, {"s": tricky, "nested": [None, True, 1.5]})
    ]


@pytest.mark.parametrize("path", SIZES)
def test_a_table_of_keys_only_inserts_new_keys(conn: Any, pg_dsn: str, path: str) -> None:
    entity = make_entity(columns=(Column("id", ("Id",), "bigint"),), version_column=None)
    store = setup(conn, entity)
    batch = records(SIZES[path])
    assert upsert(conn, entity, store, batch)[0] == len(batch)
    assert upsert(conn, entity, store, batch + records(2, start=10_000))[0] == 2


@pytest.mark.parametrize("path", SIZES)
def test_a_column_added_in_the_middle_of_the_yaml_gets_its_own_values(
    conn: Any, pg_dsn: str, path: str
) -> None:
    """The table appends a new column at its end; values must land by name, not place."""
    entity = make_entity()
    setup(conn, entity)
    columns = list(entity.columns)
    columns.insert(2, Column("status", ("Status",), "text"))
    wider = make_entity(columns=tuple(columns))
    store = setup(conn, wider)
    batch = [{**record, "Status": "open"} for record in records(SIZES[path])]
    upsert(conn, wider, store, batch)
    assert query(pg_dsn, "SELECT DISTINCT status, left(title, 1) FROM things") == [("open", "t")]


@pytest.mark.parametrize("path", SIZES)
def test_a_lone_surrogate_in_a_jsonb_value_rejects_only_its_row(
    conn: Any, pg_dsn: str, path: str
) -> None:
    """COPY text cannot hold it; the batch falls back to row by row. (The row builder
    rejects such a value first; this is the store's own safety net.)"""
    entity = make_entity()
    store = setup(conn, entity)
    batch = records(SIZES[path])

    def poison(index: int, row: Row) -> Row:
        if index != 4:
            return row
        return (*row[:2], '{"s": "lone \ud800"}', *row[3:])

    written, rejects = upsert(conn, entity, store, batch, poison)
    assert written == len(batch) - 1
    assert [r.record["Id"] for r in rejects] == [4]
