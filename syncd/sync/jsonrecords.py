"""Records out of a JSON body: a page from a source, or a push.

Two things the standard decoder does not do, and a sync needs:

* A number keeps its spelling. `1.10`, `1e2` or `1e999` become `Number`s
  (`syncd.columns.json_number`), floats that remember the text they were read from, so a
  text column stores what the source wrote (not `1.1`, `100.0` or `inf`) and a
  numeric column its exact value.
* One bad record does not sink its page. A body the decoder refuses as a whole only
  because some record in it is beyond its limits (nested deeper than its recursion
  limit, an integer of more than 4300 digits) is split into its records, which are
  decoded one by one: each record that still fails becomes an `Undecodable`, which
  the row builder rejects like any bad record, and the rest of the page lands. A
  body that is not JSON, or has no array where the records should be, stays an
  invalid body (`BadBody`): a source's is retried, a push's answered 400.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from syncd.columns.json_number import Number

# The most of an undecodable record's text kept in its reject.
EXCERPT = 2000


class BadBody(ValueError):
    """The body is not the expected JSON; the message says why, on one line, without
    quoting the body."""


@dataclass(frozen=True)
class Undecodable:
    """A record the decoder cannot read, though the page around it is sound."""

    text: str  # the record's JSON, as received
    reason: str

    def __str__(self) -> str:  # what the pager compares records by (paging.identity)
        return f"undecodable record: {self.text}"


def _refuse_constant(name: str) -> Any:
    raise BadBody(f"malformed JSON: {name} is not valid JSON")


def decode(text: str | bytes, *, constants: bool = True) -> Any:
    """JSON text to Python, numbers with fractions as `Number`. `constants=False`
    refuses the non-standard NaN and Infinity (which json.loads accepts)."""
    # strict=False: a control character written raw inside a string (not escaped, as
    # JSON wants) is read as itself; the row builder judges the value, not the page.
    if constants:
        return json.loads(text, parse_float=Number, strict=False)
    return json.loads(text, parse_float=Number, parse_constant=_refuse_constant, strict=False)


# msgspec reads a page faster than the standard library: 4.0 µs a demo task record
# against 4.5 (its three floats each go through the Number hook), 1.5 against 6 with
# one float a record. It agrees with the standard library on every body it accepts:
# numbers with fractions still become `Number`s with their spelling, integers stay
# exact. What it refuses (NaN and Infinity, a raw control character in a string,
# a lone surrogate, an integer too large for it, nesting too deep, bytes that are not
# UTF-8, a body that is not JSON) goes the standard library's way below, so whatever
# made it refuse is judged exactly as before: one record's reject, or an invalid body.
# One edge moved: msgspec reads nesting to a fixed ~999 levels, the standard library
# to its recursion limit less the caller's stack, so a record some 990 levels deep
# may now decode (then stored if the deep part is in no column, else rejected as
# too deep to write) where it was an undecodable record.
_FAST = msgspec.json.Decoder(float_hook=Number)
_BOM = b"\xef\xbb\xbf"


def records_in(
    body: bytes | bytearray, records_path: tuple[str, ...] = (), *, constants: bool = True
) -> list[Any]:
    """The records of a body: the array at the dotted `records_path` ("" is the body
    itself), with `Undecodable` in place of records that cannot be decoded alone."""
    try:
        decoded = _FAST.decode(memoryview(body)[len(_BOM) :] if body[:3] == _BOM else body)
    except (msgspec.MsgspecError, RecursionError):
        return _records_the_slow_way(body, records_path, constants)
    return _records_at(decoded, records_path)


def _records_the_slow_way(
    body: bytes | bytearray, records_path: tuple[str, ...], constants: bool
) -> list[Any]:
    """`records_in` by the standard library, which reads what msgspec refuses, or says
    exactly what is wrong with it."""
    try:
        text = body.decode("utf-8-sig")  # a byte order mark may be ignored (RFC 8259 8.1)
    except UnicodeDecodeError as exc:
        raise BadBody(f"body is not UTF-8: invalid byte at position {exc.start}") from None
    try:
        return _records_at(decode(text, constants=constants), records_path)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise BadBody(f"malformed JSON: {exc.msg} at {where}") from None
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, BadBody):
            raise
        # Too deep, or an integer too long, somewhere: if it is inside records, only
        # those records are lost.
        elements = split_array(text, records_path)
        if elements is None:
            raise BadBody(f"cannot be decoded: {_limit(exc)}") from None
        return [_one_record(element, constants) for element in elements]


def _records_at(body: Any, records_path: tuple[str, ...]) -> list[Any]:
    node = body
    for step in records_path:
        if not isinstance(node, dict) or step not in node:
            raise BadBody(f"the body has no '{'.'.join(records_path)}'")
        node = node[step]
    if not isinstance(node, list):
        where = f" at {'.'.join(records_path)}" if records_path else ""
        raise BadBody(f"expected a JSON array of records{where}, got {_kind(node)}")
    return node


def _one_record(element: str, constants: bool) -> Any:
    try:
        return decode(element, constants=constants)
    except json.JSONDecodeError as exc:
        raise BadBody(f"malformed JSON: {exc.msg} in a record") from None
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, BadBody):
            raise
        return Undecodable(element[:EXCERPT], f"the record cannot be decoded: {_limit(exc)}")


def _limit(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested deeper than the JSON decoder's limit"
    if "digits" in str(exc):
        return "an integer of more than 4300 digits"
    return str(exc).split(";")[0]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


# --- splitting an array without decoding it ---------------------------------------------------

# A string's opening quote, a run of openers, a run of closers, or a comma. Runs are
# taken whole, so a body nested a million deep is a few regex steps, not a million.
_TOKEN = re.compile(r'"|[\[{]+|[\]}]+|,')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPENER_OF = str.maketrans("]}", "[{")


@dataclass
class _Frame:
    """A container on the records path (the body, the objects holding the array along
    `records_path`, and the array itself): at most len(records_path) + 1 of them."""

    kind: str  # "[" or "{"
    depth: int
    expect_key: bool = False  # an object, before a key
    key: str | None = None  # an object: the key of the value being read


def split_array(text: str, records_path: tuple[str, ...]) -> list[str] | None:
    """The text of each element of the array at `records_path`, found by scanning the
    structure only (strings, brackets, commas), without recursion and in memory of one
    byte a level: any depth is fine. None when there is no such array, or the text
    around it is not well formed."""
    kinds = bytearray()  # every open container, innermost last: b"[" or b"{"
    frames: list[_Frame] = []  # the open ones on the records path, outermost first
    target_depth = len(records_path)
    elements: list[str] = []
    start = 0  # where the element being read began
    pos = 0
    while (match := _TOKEN.search(text, pos)) is not None:
        token, pos = match[0], match.end()
        innermost = frames[-1] if frames and frames[-1].depth == len(kinds) - 1 else None
        if token == '"':
            rest = _STRING_REST.match(text, pos)
            if rest is None:
                return None  # an unterminated string
            if innermost is not None and innermost.kind == "{" and innermost.expect_key:
                innermost.key = _key(text[pos - 1 : rest.end()])
                innermost.expect_key = False
            pos = rest.end()
        elif token == ",":
            if innermost is None:
                pass
            elif innermost.kind == "[" and innermost.depth == target_depth:
                elements.append(text[start : match.start()].strip())
                start = pos
            elif innermost.kind == "{":
                innermost.expect_key, innermost.key = True, None
        elif token[0] in "[{":
            for offset, char in enumerate(token):
                depth = len(kinds)
                if (
                    depth > target_depth
                    or len(frames) < depth
                    or not _on_path(frames, records_path)
                ):
                    kinds += token[offset:].encode()  # none of these can be on the path
                    break
                frames.append(_Frame(char, depth, expect_key=char == "{"))
                kinds.append(ord(char))
                if depth == target_depth and char == "[":
                    elements, start = [], match.start() + offset + 1  # the array opens
        else:
            closing = len(token)
            expected = token[::-1].translate(_OPENER_OF).encode()  # outermost first
            if closing > len(kinds) or kinds[-closing:] != expected:
                return None
            for offset in range(closing):
                depth = len(kinds) - 1 - offset
                if not frames or frames[-1].depth != depth:
                    continue
                frame = frames.pop()
                if frame.depth == target_depth and frame.kind == "[":
                    end = match.start() + offset
                    if target_depth == 0 and text[end + 1 :].strip():
                        return None  # something after the body's own array
                    last = text[start:end].strip()
                    return [*elements, last] if last else elements
            del kinds[-closing:]
    return None


def _on_path(frames: list[_Frame], records_path: tuple[str, ...]) -> bool:
    """Whether a container opened now, inside the innermost of `frames` (all open on
    the path), lies on the records path."""
    if not frames:
        return True  # the body itself
    parent = frames[-1]
    return (
        parent.kind == "{"
        and parent.depth < len(records_path)
        and parent.key == records_path[parent.depth]
    )


def _key(quoted: str) -> str | None:
    try:
        key = json.loads(quoted)
    except ValueError:
        return None
    return key if isinstance(key, str) else None
