"""Records out of JSON bodies: spelled numbers, and one undecodable record among good ones."""

from __future__ import annotations

import pytest

from syncd.columns.json_number import Number
from syncd.sync import jsonrecords
from syncd.sync.jsonrecords import BadBody, Undecodable, records_in, split_array

DEEP = "[" * 50_000 + "]" * 50_000


def test_numbers_with_a_fraction_or_exponent_keep_their_spelling() -> None:
    [record] = records_in(b'[{"a": 1.10, "b": 1e999, "c": 2, "d": -0.0}]')
    assert isinstance(record["a"], Number) and record["a"].text == "1.10" and record["a"] == 1.1
    assert record["b"].text == "1e999" and record["b"] == float("inf")
    assert record["c"] == 2 and type(record["c"]) is int
    assert record["d"].text == "-0.0"


AGREED = [
    b'[{"a": 1.10, "b": 1e999, "c": -0.0, "d": 1E+02, "e": 0.1e-400, "f": 123456789012345678901}]',
    b'[{"s": "\\u00e9\\ud83d\\ude00\\n\\"\\\\", "t": "\xc3\xa9", "u": null, "v": true}]',
    b'\xef\xbb\xbf [ {"a": {"a": {"a": [1, [2, [3]]]}}}, [], {}, "x", 1, null ]',
    b'[{"k": 1, "k": 2}]',
    # Integers just past 64 bits: msgspec before 0.19 read some of them wrongly.
    b"[19933688932870350000, 18446744073709551616, -9223372036854775809]",
    b"[]",
]


@pytest.mark.parametrize("body", AGREED)
def test_the_fast_decoder_reads_bodies_exactly_as_the_standard_library(body: bytes) -> None:
    """msgspec decodes pages; whatever it accepts must come out as the standard
    library's decoding would have: the same values, numbers with their spelling."""
    fast = records_in(body)
    slow = jsonrecords._records_the_slow_way(body, (), True)
    assert spelled(fast) == spelled(slow)


def spelled(value: object) -> object:
    """A decoded value with every number's type, and a Number's spelling, made visible."""
    if isinstance(value, dict):
        return {key: spelled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [spelled(item) for item in value]
    if isinstance(value, Number):
        return ("Number", value.text)
    return (type(value).__name__, value)


def test_a_record_too_deep_to_decode_is_undecodable_and_its_neighbours_are_kept() -> None:
    body = f'[{{"id": 1}}, {{"id": 2, "x": {DEEP}}}, {{"id": 3, "s": "],[{{"}}]'
    first, bad, last = records_in(body.encode())
    assert first == {"id": 1} and last == {"id": 3, "s": "],[{"}
    assert isinstance(bad, Undecodable)
    assert bad.reason == "the record cannot be decoded: nested deeper than the JSON decoder's limit"
    assert bad.text.startswith('{"id": 2, "x": [[[')
    assert len(bad.text) == 2000  # an excerpt


def test_an_integer_too_long_to_decode_makes_its_record_undecodable() -> None:
    first, bad = records_in(b'[{"id": 1}, {"id": ' + b"9" * 5000 + b"}]")
    assert first == {"id": 1}
    assert isinstance(bad, Undecodable) and "4300 digits" in bad.reason


def test_records_under_a_path_are_split_there_and_only_there() -> None:
    body = '{"meta": {"data": [1]}, "data": {"items": [{"id": 1}, ' + DEEP + ', {"a": "\\""}]}}'
    records = records_in(body.encode(), ("data", "items"))
    assert records[0] == {"id": 1} and records[2] == {"a": '"'}
    assert isinstance(records[1], Undecodable)


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, (), "cannot be decoded: nested deeper"),
        (b'{"data": ' + DEEP.encode() + b"}", ("items",), "cannot be decoded"),
        (b'[{"a": 1}, {"b": tru}, ' + DEEP.encode() + b"]", (), "malformed JSON"),
        (b"[1, 2", (), "malformed JSON"),
        (b'{"data": 1}', ("data",), "expected a JSON array of records at data, got a number"),
        (b"\xff", (), "body is not UTF-8"),
    ],
)
def test_a_body_that_is_not_an_array_of_records_stays_a_bad_body(
    body: bytes, path: tuple[str, ...], message: str
) -> None:
    with pytest.raises(BadBody, match=message):
        records_in(body, path)


def test_nan_is_refused_only_when_asked() -> None:
    [record] = records_in(b'[{"a": NaN}]')
    assert record["a"] != record["a"]
    with pytest.raises(BadBody, match="NaN is not valid JSON"):
        records_in(b'[{"a": NaN}]', constants=False)


@pytest.mark.parametrize(
    ("text", "path", "elements"),
    [
        ("[]", (), []),
        ('[ 1 , [2, 3], {"a": [4]} ]', (), ["1", "[2, 3]", '{"a": [4]}']),
        ('{"x": [1], "d": [ "a,]" ]}', ("d",), ['"a,]"']),
        ('{"d": {"e": [7]}, "e": [8]}', ("d", "e"), ["7"]),
        ('{"d": [1}', ("d",), None),
        ('[1, "unterminated]', (), None),
        ('{"a": [1]}', (), None),
        ('{"data": {"a": 1, "b": [2, 3]}}', ("data",), None),
        ("[1] x", (), None),
        ('[[1, 2], {"k": [3, "]"]}, 4]', (), ["[1, 2]", '{"k": [3, "]"]}', "4"]),
        ('{"d": [1, 2], "d": [3]}', ("d",), ["1", "2"]),
        ("[1, 2]]", (), None),
        ("[1, 2}", (), None),
    ],
)
def test_split_array_finds_the_elements_by_structure(
    text: str, path: tuple[str, ...], elements: list[str] | None
) -> None:
    assert split_array(text, path) == elements


def test_splitting_costs_a_byte_a_level_not_an_object() -> None:
    """16 million levels: a few regex steps and a 16 MB bytearray (an object a level
    took 2.7 GB for a 16 MiB page)."""
    [record] = records_in(b"[" * 16_000_000 + b"]" * 16_000_000)
    assert isinstance(record, Undecodable)


def test_a_control_character_written_raw_in_a_string_is_read_as_itself() -> None:
    """JSON wants it escaped; a page holding one raw is still read (the row builder
    then judges the value: text cannot hold a NUL)."""
    [record] = records_in(b'[{"a": "tab\there", "b": "nul\x00"}]')
    assert record == {"a": "tab\there", "b": "nul\x00"}
