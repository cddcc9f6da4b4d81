"""From a source record to a typed row (pure: no database, no HTTP)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.columns.types import column_type
from syncd.config.model import Column, Entity, SourceConfig
from syncd.db.rows import Reject
from syncd.sync.records import RowBuilder

KOLKATA = ZoneInfo("Asia/Kolkata")


def entity(*columns: tuple[str, str, str], key: str = "id", keep_raw: bool = False) -> Entity:
    return Entity(
        name="thing",
        url="http://localhost/x",
        table="things",
        primary_key=(key,),
        columns=tuple(Column(name, tuple(field.split(".")), kind) for name, field, kind in columns),
        source=SourceConfig(timezone=KOLKATA),
        keep_raw=keep_raw,
    )


def convert(kind: str, value: Any) -> Any:
    return column_type(kind).converter(KOLKATA)(value)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("text", "héllo", "héllo"),
        ("text", 42, "42"),
        ("text", True, "true"),
        ("integer", 7, 7),
        ("integer", 7.0, 7),
        ("integer", "-12", -12),
        ("bigint", 2**40, 2**40),
        ("numeric", 1.1, 1.1),  # kept a float: its repr is what PostgreSQL reads
        ("numeric", "3.14159", Decimal("3.14159")),
        ("double precision", 2, 2.0),
        ("boolean", False, False),
        ("boolean", "true", True),
        ("date", "2024-02-29", date(2024, 2, 29)),
        ("uuid", "6F9619FF-8B86-D011-B42D-00C04FC964FF", "6f9619ff-8b86-d011-b42d-00c04fc964ff"),
    ],
)
def test_values_that_fit_their_column(kind: str, value: Any, expected: Any) -> None:
    assert convert(kind, value) == expected


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("integer", True, "expected an integer, got a boolean"),
        ("integer", "high", "expected an integer, got 'high'"),
        ("integer", 2**31, "out of range"),
        ("integer", 1.5, "expected an integer"),
        ("bigint", 2**63, "out of range"),
        ("numeric", "NaN", "finite"),
        ("numeric", {"a": 1}, "got an object"),
        ("double precision", "fast", "expected a number"),
        ("boolean", 1, "expected a boolean"),
        ("text", [1], "got an array"),
        ("text", "a\x00b", "NUL"),
        ("date", "2024-02-30", "expected a date"),
        ("date", "2024-02-01T00:00:00", "expected a date"),
        ("uuid", "not-a-uuid", "expected a UUID"),
        ("timestamptz", "2024-02-31 25:61:00", "expected an ISO 8601 timestamp"),
        ("timestamptz", 1700000000, "expected an ISO 8601 timestamp"),
    ],
)
def test_values_that_do_not_fit_say_why(kind: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        convert(kind, value)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, tzinfo=UTC)),
        ("2024-03-01 10:00:00+02:00", datetime(2024, 3, 1, 8, tzinfo=UTC)),
        ("2024-03-01T10:00:00.123456", datetime(2024, 3, 1, 4, 30, 0, 123456, tzinfo=UTC)),
        ("2024-03-01 10:00:00", datetime(2024, 3, 1, 4, 30, tzinfo=UTC)),  # source zone
        ("2024-03-01 10:00", datetime(2024, 3, 1, 4, 30, tzinfo=UTC)),
    ],
)
def test_timestamptz_without_offset_is_in_the_source_zone(text: str, instant: datetime) -> None:
    assert convert("timestamptz", text) == instant


def test_timestamp_without_time_zone_keeps_the_value_as_written() -> None:
    assert convert("timestamp", "2024-03-01T10:00:00+05:00") == datetime(2024, 3, 1, 10)
    assert convert("timestamp", "2024-03-01 10:00:00.5") == datetime(2024, 3, 1, 10, 0, 0, 500000)


def test_absent_fields_and_paths_through_null_are_null() -> None:
    builder = RowBuilder(
        entity(("id", "Id", "bigint"), ("site", "Location.Site.Name", "text"), ("n", "N", "text"))
    )
    assert builder.build({"Id": 1, "Location": None}) == ("1", None, None)
    assert builder.build({"Id": 2, "Location": {"Site": None}}) == ("2", None, None)
    assert builder.build({"Id": 3, "Location": {"Site": {"Name": "x"}}, "N": None}) == (
        "3",
        "x",
        None,
    )


def test_a_path_through_a_non_object_is_a_reject() -> None:
    builder = RowBuilder(entity(("id", "Id", "bigint"), ("site", "Location.Site", "text")))
    rejected = builder.build({"Id": 1, "Location": "Berlin"})
    assert isinstance(rejected, Reject)
    assert rejected.reason == "field Location.Site: Location is 'Berlin', not an object"


@pytest.mark.parametrize("record", [{}, {"Id": None}, {"Other": 1}])
def test_a_missing_or_null_key_is_a_reject(record: dict[str, Any]) -> None:
    rejected = RowBuilder(entity(("id", "Id", "bigint"))).build(record)
    assert isinstance(rejected, Reject)
    assert rejected.reason == "primary key field Id is missing or null"
    assert rejected.record is record


@pytest.mark.parametrize("record", [[1, 2], "text", 5, None])
def test_a_record_that_is_not_an_object_is_a_reject(record: Any) -> None:
    rejected = RowBuilder(entity(("id", "Id", "bigint"))).build(record)
    assert isinstance(rejected, Reject)
    assert "not an object" in rejected.reason


def test_keep_raw_appends_the_whole_record() -> None:
    row = RowBuilder(entity(("id", "Id", "bigint"), keep_raw=True)).build({"Id": 1, "X": [1]})
    assert not isinstance(row, Reject)
    assert row[0] == "1"
    assert row[1] is not None and json.loads(row[1]) == {"Id": 1, "X": [1]}


def test_uuid_and_fixed_offsets_round_trip() -> None:
    value = uuid.uuid4()
    assert convert("uuid", str(value)) == str(value)
    moment = convert("timestamptz", "2024-01-01T00:00:00-05:30")
    assert moment.utcoffset() == -timedelta(hours=5, minutes=30)
    assert moment == datetime(2024, 1, 1, 5, 30, tzinfo=UTC)


def test_field_names_with_quotes_and_code_in_them_are_only_ever_names() -> None:
    """The builder is written out as Python per entity: configured names go in as
    literals, so a name that looks like code is read as a field, never run."""
    odd = "x'); raise SystemExit(3); ('"
    builder = RowBuilder(
        entity(("id", 'I"d\\', "bigint"), ("t", odd, "text"), ("n", f"{odd}2.\n", "integer"))
    )
    record = {'I"d\\': 1, odd: "v", f"{odd}2": {"\n": 5}}
    assert builder.build(record) == ("1", "v", "5")
    rejected = builder.build({'I"d\\': 1, odd: {"not": "text"}})
    assert isinstance(rejected, Reject)
    assert rejected.reason == f"field {odd}: expected text, got an object"
    missing = builder.build({odd: "v"})
    assert isinstance(missing, Reject)
    assert missing.reason == 'primary key field I"d\\ is missing or null'
