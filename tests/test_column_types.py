"""The registry of column types: the names the configuration accepts, and for each
type that PostgreSQL agrees with what the registry says of it (its spelling in
format_type(), and that COPY text and a bound parameter store the same value)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

from devtools.demo_config import DEMO_ENTITIES, demo_config
from devtools.demo_source import DemoSource
from syncd.columns.converters import BadValue
from syncd.columns.json_number import Number
from syncd.columns.types import BY_NAME, COLUMN_TYPES, VERSION_TYPES, ColumnType, column_type
from syncd.config.loader import load_config
from syncd.db.copytext import CopyFormatter
from syncd.db.rows import Reject
from syncd.db.schema import entity_columns
from syncd.sync.records import RowBuilder
from tests.support import write_config

KOLKATA = ZoneInfo("Asia/Kolkata")
BERLIN = ZoneInfo("Europe/Berlin")

# A JSON value for each type, chosen to exercise its converter and formatter.
SAMPLES: dict[str, Any] = {
    "text": "tab\there, back\\slash, line\nfeed, é",
    "integer": "-42",
    "bigint": 2**40,
    "numeric": Number("1.10"),
    "double precision": 0.1,
    "boolean": "true",
    "date": "2024-02-29",
    "timestamp": "2024-03-01T10:00:00.5+05:00",
    "timestamptz": "2024-03-01 10:00:00",
    "uuid": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
    "jsonb": {"a": [1, "x\ny", None], "b": {"c": Number("1e2")}},
}


def test_the_names_the_configuration_accepts_in_the_order_messages_list_them() -> None:
    assert COLUMN_TYPES == (
        "text",
        "integer",
        "bigint",
        "numeric",
        "double precision",
        "boolean",
        "date",
        "timestamp",
        "timestamptz",
        "uuid",
        "jsonb",
    )
    assert VERSION_TYPES == (
        "timestamptz",
        "timestamp",
        "date",
        "integer",
        "bigint",
        "numeric",
        "double precision",
    )
    assert set(SAMPLES) == set(COLUMN_TYPES)


def test_an_unknown_name_is_not_a_type() -> None:
    with pytest.raises(KeyError):
        column_type("varchar")


@pytest.fixture
def conn(pg_conn: Any) -> Any:
    return pg_conn


@pytest.mark.parametrize("name", COLUMN_TYPES)
def test_postgresql_agrees_with_the_registry(conn: Any, name: str) -> None:
    """The cell of a value, in a COPY line and as an INSERT's literal, stores what its
    converted value bound as a parameter stores."""
    kind = BY_NAME[name]
    value = kind.converter(KOLKATA)(SAMPLES[name])
    cell = kind.cell(KOLKATA)(SAMPLES[name])
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE t (how text, v {})").format(sql.SQL(kind.sql)))
        cur.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 't'::regclass AND attname = 'v'"
        )
        assert cur.fetchone() == (kind.canonical,)
        assert stored_alike(cur, value, [cell]) == [True]
    conn.rollback()


def stored_alike(cur: Any, value: Any, cells: list[str]) -> list[bool]:
    """Whether each cell, COPYed and sent as an INSERT's literal, stores what `value`
    bound as a parameter stores, in the temporary table `t`."""
    cur.execute("TRUNCATE t")
    cur.execute("INSERT INTO t VALUES ('bound', %s)", (value,))
    for i, cell in enumerate(cells):
        cur.copy_expert(
            "COPY t FROM STDIN", io.BytesIO(CopyFormatter(["text", "text"]).text([(f"c{i}", cell)]))
        )
        execute_values(cur, "INSERT INTO t VALUES %s", [(f"l{i}", cell)])
    cur.execute(
        "SELECT substr(how, 2)::int, bool_and(v IS NOT DISTINCT FROM"
        " (SELECT v FROM t WHERE how = 'bound')) FROM t WHERE how <> 'bound' GROUP BY 1 ORDER BY 1"
    )
    return [alike for _, alike in cur.fetchall()]


# Timestamps in the shapes sources write, and some they should not: the shortcut that
# passes the usual shape through must store exactly what parsing it stores, and
# refuse exactly what the converter refuses.
TIMES = [
    "2024-03-01T10:00:00Z",
    "2024-03-01T10:00:00.5+05:30",
    "2024-03-01 10:00:00.123456-03:00",
    "2024-03-01T10:00:00+14:00",
    "2024-02-28T23:59:59.999999Z",
    "2024-02-29T12:00:00Z",
    "2023-12-31T23:59:59+00:00",
    "2024-03-01T10:00:00",
    "2024-03-01 10:00",
    "2024-03-01T10:00:00.1234567Z",
    "2024-03-31T02:30:00",
    "2024-10-27 02:30:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59+01:00",
    "2024-03-01T10:00:00+05",
    "2024-03-01T10:00:00+0530",
    "2024-03-01T24:00:00Z",
    "2024-02-30T10:00:00Z",
    "2024-13-01T10:00:00Z",
    "0000-01-01T00:00:00Z",
    "2024-03-01T10:00:60Z",
    "2024-03-01T10:00:00+15:00",
    "2024-03-01T10:00:00,5Z",
    "2024-03-01X10:00:00Z",
    "2024-03-01T10:00:00Z ",
]


@pytest.mark.parametrize("zone", [BERLIN, ZoneInfo("UTC")], ids=str)
@pytest.mark.parametrize("name", ["timestamptz", "timestamp"])
def test_a_timestamp_passed_through_stores_what_its_parsed_value_stores(
    conn: Any, name: str, zone: ZoneInfo
) -> None:
    kind = BY_NAME[name]
    convert, cell = kind.converter(zone), kind.cell(zone)
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'America/New_York'")  # not the source's zone
        cur.execute(sql.SQL("CREATE TEMP TABLE t (how text, v {})").format(sql.SQL(kind.sql)))
        for text in TIMES:
            try:
                value = convert(text)
            except BadValue as refused:
                with pytest.raises(BadValue) as also:
                    cell(text)
                assert str(also.value) == str(refused), text
                continue
            assert stored_alike(cur, value, [cell(text), kind.write(value)]) == [True, True], text
    conn.rollback()


@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC"])
@pytest.mark.parametrize("name", list(DEMO_ENTITIES))
def test_the_demo_records_store_the_same_as_cells_as_they_did_as_converted_values(
    conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, zone: str
) -> None:
    """Every demo record, bad ones among them, from a source in a zone with summer time
    and in UTC: the rows of cells (COPY) store exactly what the rows of converted
    values did (bound parameters), and the same records are rejected for the same
    reasons."""
    demo = DemoSource(counts={name: 400}, seed=11, timezone=zone)
    demo.bad_records(name, 10)
    data = demo_config("dbname=unused", "http://127.0.0.1:9", entities=[name])
    data["source"]["timezone"] = zone
    data["entities"][name]["keep_raw"] = True
    entity = load_config(write_config(tmp_path, data)).entities[name]
    records = demo.records(name)

    cells = [RowBuilder(entity).build(record) for record in records]
    with monkeypatch.context() as patched:  # the row builder as it was: converted values
        patched.setattr(ColumnType, "cell", lambda kind, tz: kind.converter(tz))
        values = [RowBuilder(entity).build(record) for record in records]
    assert [c.reason for c in cells if isinstance(c, Reject)] == [
        v.reason for v in values if isinstance(v, Reject)
    ]
    assert sum(isinstance(c, Reject) for c in cells) >= 10

    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(column_type(kind).sql))
        for column, kind in entity_columns(entity)
    )
    with conn.cursor() as cur:
        for table in ("as_cells", "as_values"):
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(sql.Identifier(table), columns))
        formatter = CopyFormatter([kind for _, kind in entity_columns(entity)])
        rows = [c for c in cells if not isinstance(c, Reject)]
        cur.copy_expert("COPY as_cells FROM STDIN", io.BytesIO(formatter.text(rows)))
        typed = [v for v in values if not isinstance(v, Reject)]
        execute_values(cur, "INSERT INTO as_values VALUES %s", typed)
        cur.execute(
            "SELECT (SELECT count(*) FROM as_cells), (SELECT count(*) FROM"
            " (TABLE as_cells EXCEPT ALL TABLE as_values) d),"
            " (SELECT count(*) FROM (TABLE as_values EXCEPT ALL TABLE as_cells) d)"
        )
        assert cur.fetchone() == (len(rows), 0, 0)
    conn.rollback()


@pytest.mark.parametrize("name", [n for n in COLUMN_TYPES if n != "jsonb"])
def test_a_cell_reads_back_as_its_converted_value(name: str) -> None:
    """Keys are sorted and versions compared as values read back from their cells: the
    same values the converter gives (jsonb, never a version, is compared as text)."""
    kind = BY_NAME[name]
    value = SAMPLES[name]
    assert kind.reader(KOLKATA)(kind.cell(KOLKATA)(value)) == kind.converter(KOLKATA)(value)
