"""The registry of column types: the names the configuration accepts, and for each
type that PostgreSQL agrees with what the registry says of it (its spelling in
format_type(), and that COPY text and a bound parameter store the same value)."""

from __future__ import annotations

import io
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg2 import sql

from syncd.columns.json_number import Number
from syncd.columns.types import BY_NAME, COLUMN_TYPES, VERSION_TYPES, column_type
from syncd.db.copytext import CopyFormatter

KOLKATA = ZoneInfo("Asia/Kolkata")

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
    kind = BY_NAME[name]
    value = kind.converter(KOLKATA)(SAMPLES[name])
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TEMP TABLE t (how text, v {})").format(sql.SQL(kind.sql)))
        cur.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 't'::regclass AND attname = 'v'"
        )
        assert cur.fetchone() == (kind.canonical,)
        cur.execute("INSERT INTO t VALUES ('bound', %s)", (value,))
        line = CopyFormatter(["text", name]).text([("copied", value)])
        cur.copy_expert("COPY t FROM STDIN", io.BytesIO(line))
        cur.execute(
            "SELECT (SELECT v FROM t WHERE how = 'copied') IS NOT DISTINCT FROM"
            " (SELECT v FROM t WHERE how = 'bound'), (SELECT v IS NULL FROM t LIMIT 1)"
        )
        assert cur.fetchone() == (True, False)
    conn.rollback()
