"""YAML read into a small tree that remembers where every value was written,
and a reader that checks values out of that tree, collecting problems.

`yaml.safe_load` forgets line numbers, but configuration errors must say
`FILE:LINE: key.path: message`. So the document is composed into PyYAML nodes
(which carry marks) and turned into `Scalar`/`Seq`/`Map` objects that keep the
line. Duplicate keys, which PyYAML silently resolves to the last one, are
reported instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TypeAlias, TypeVar

import yaml

T = TypeVar("T")

# The tag the resolver gives the `<<` key of a YAML merge (`<<: *defaults`).
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Scalar:
    line: int
    value: object  # as YAML reads it: str, int, float, bool, None, date or datetime
    # The characters as written. Needed because YAML 1.1 reads an unquoted
    # `12:00` as the integer 720 and `2024-01-01 00:00:00` as a datetime.
    text: str
    plain: bool  # written without quotes


@dataclass(frozen=True)
class Seq:
    line: int
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Map:
    line: int
    entries: dict[str, Node]  # in the order written


Node: TypeAlias = Scalar | Seq | Map
# Reads the value of a node found at a key path; None means a problem was recorded.
Reader: TypeAlias = Callable[[Node, str], T | None]


@dataclass(frozen=True)
class YamlProblem:
    line: int
    path: str  # dotted key path; "" for the document as a whole
    message: str


def join_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, Scalar) and node.value is None)


# --- composing -------------------------------------------------------------------------------


def compose(text: str) -> tuple[Node | None, list[YamlProblem]]:
    """Parse one YAML document. Returns (None, []) for an empty document and
    (None, [problem]) when the text is not YAML at all."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            return None, [_syntax_problem(exc)]
        if root is None:
            return None, []
        builder = _Builder(loader)
        tree = builder.build(root, root.start_mark.line + 1, "")
        return tree, builder.problems
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.YAMLError) -> YamlProblem:
    # Only `context`/`problem` are used: str(exc) quotes a snippet of the file,
    # which could be a line holding a password.
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = ", ".join(part for part in (exc.context, exc.problem) if part)
        return YamlProblem(line, "", f"invalid YAML: {detail or 'syntax error'}")
    return YamlProblem(1, "", "invalid YAML")


class _Builder:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self._active: set[int] = set()  # nodes being built: an alias may point to an ancestor
        self.problems: list[YamlProblem] = []

    def build(self, node: yaml.Node, line: int, path: str) -> Node:
        """`line` is where the value is declared: its key's line inside a
        mapping, which is what a reader looks for even when the value is a
        block starting on the next line."""
        if id(node) in self._active:
            self.problems.append(YamlProblem(line, path, "an alias refers to its own parent"))
            return Scalar(line, None, "", True)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._map(node, line, path)
            if isinstance(node, yaml.SequenceNode):
                return self._seq(node, line, path)
            return self._scalar(node, line, path)
        finally:
            self._active.discard(id(node))

    def _seq(self, node: yaml.SequenceNode, line: int, path: str) -> Seq:
        items = tuple(
            self.build(item, item.start_mark.line + 1, f"{path}[{index}]")
            for index, item in enumerate(node.value)
        )
        return Seq(line, items)

    def _map(self, node: yaml.MappingNode, line: int, path: str) -> Map:
        entries: dict[str, Node] = {}
        merged: list[Map] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node, key_line, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                message = "a key must be a name, not a list or mapping"
                self.problems.append(YamlProblem(key_line, path, message))
                continue
            # Keys are taken as written: `on:` or `1:` are names here, not a boolean/number.
            key = str(key_node.value)
            key_path = join_path(path, key)
            if key in entries:
                message = f"duplicate key (first given on line {entries[key].line})"
                self.problems.append(YamlProblem(key_line, key_path, message))
                continue
            entries[key] = self.build(value_node, key_line, key_path)
        # Keys written in the mapping itself win over merged ones; among merged
        # mappings the first listed wins (YAML merge-key semantics).
        for source in merged:
            for key, value in source.entries.items():
                entries.setdefault(key, value)
        return Map(line, entries)

    def _merge_sources(self, node: yaml.Node, line: int, path: str) -> list[Map]:
        built = self.build(node, line, path)
        candidates = built.items if isinstance(built, Seq) else (built,)
        maps = [candidate for candidate in candidates if isinstance(candidate, Map)]
        if len(maps) != len(candidates):
            message = "`<<` must merge a mapping or a list of mappings"
            self.problems.append(YamlProblem(line, path, message))
        return maps

    def _scalar(self, node: yaml.Node, line: int, path: str) -> Scalar:
        text = str(node.value)
        plain = isinstance(node, yaml.ScalarNode) and node.style is None
        try:
            value: object = self._loader.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError):
            # e.g. an unknown `!tag`; the value itself is not echoed.
            self.problems.append(YamlProblem(line, path, f"cannot read a value tagged {node.tag}"))
            value = None
        return Scalar(line, value, text, plain)


# --- reading -------------------------------------------------------------------------------

# `$$`, `${NAME}`, or a `${` that is neither.
_REFERENCE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")


def describe(node: Node) -> str:
    """What was found, for `expected X, found Y`. Strings are never quoted back:
    they may be, or contain, something secret."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    value = node.value
    kinds: list[tuple[type, str]] = [
        (bool, "a boolean"),  # before int: bool is an int
        (int, "an integer"),
        (float, "a number"),
        (date, "a date"),
    ]
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return "a string"
    for kind, name in kinds:
        if isinstance(value, kind):
            return f"{name} ({node.text})"
    return "another kind of value"


def unknown_key(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f"unknown key (did you mean {close[0]}?)"
    return f"unknown key; expected one of {', '.join(allowed)}"


class TreeReader:
    """Reads typed values out of a tree, collecting problems as
    `FILE:LINE: key.path: message`.

    Readers take (node, key path) and return a value, or None after recording a
    problem; callers then carry on with a default, so that the rest of the file
    is still checked and every problem is reported at once. `${VAR}` in a
    string is replaced from `environ`; `$$` is a literal `$`.
    """

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[tuple[int, str]] = []

    def problem(self, line: int, path: str, message: str) -> None:
        where = f"{path}: " if path else ""
        self.problems.append((line, f"{self.file}:{line}: {where}{message}"))

    def sorted_problems(self) -> list[str]:
        # In file order, each once (a YAML alias can make one node be checked twice).
        ordered = sorted(self.problems, key=lambda problem: problem[0])
        return list(dict.fromkeys(text for _, text in ordered))

    def wrong_type(self, node: Node, path: str, expected: str) -> None:
        self.problem(node.line, path, f"expected {expected}, found {describe(node)}")

    def fields(self, node: Node, path: str, allowed: Collection[str]) -> Fields | None:
        """A mapping with a fixed set of keys; unknown keys are reported. An empty
        value counts as an empty mapping; anything else is reported (None)."""
        if is_null(node):
            return Fields(self, node, path, {})
        if not isinstance(node, Map):
            self.wrong_type(node, path, "a mapping")
            return None
        for key, child in node.entries.items():
            if key not in allowed:
                self.problem(child.line, join_path(path, key), unknown_key(key, allowed))
        known = {key: child for key, child in node.entries.items() if key in allowed}
        return Fields(self, node, path, known)

    def text(self, node: Node, path: str, allow_empty: bool = False) -> str | None:
        """A string, with `${VAR}` replaced."""
        if not (isinstance(node, Scalar) and isinstance(node.value, str)):
            self.wrong_type(node, path, "a string")
            return None
        value = self.interpolate(node.value, node, path)
        if value is not None and not value.strip() and not allow_empty:
            self.problem(node.line, path, "must not be empty")
            return None
        return value

    def text_as_written(self, node: Node, path: str) -> str | None:
        """A string for times and timestamps: YAML 1.1 turns an unquoted `12:00`
        into 720 and `2024-01-01` into a date, but the characters as written
        are what was meant."""
        if isinstance(node, Scalar) and node.plain:
            value = node.value
            if isinstance(value, int | date) and not isinstance(value, bool):
                return node.text
        return self.text(node, path)

    def interpolate(self, text: str, node: Node, path: str) -> str | None:
        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            if match[1]:
                return "$"
            name = match[2]
            if name is None:
                self.problem(node.line, path, "`${` must be followed by NAME}; write $$ for a `$`")
            elif name not in self.environ:
                self.problem(node.line, path, f"environment variable {name} is not set")
            else:
                return self.environ[name]
            failed = True
            return ""

        result = _REFERENCE.sub(substitute, text)
        return None if failed else result

    def matching(self, pattern: re.Pattern[str], what: str) -> Reader[str]:
        def read(node: Node, path: str) -> str | None:
            value = self.text(node, path)
            if value is not None and not pattern.fullmatch(value):
                self.problem(node.line, path, f"{value!r} is not {what}")
                return None
            return value

        return read

    def dotted(self, node: Node, path: str, allow_empty: bool = False) -> tuple[str, ...] | None:
        """`a.b.c` as ("a", "b", "c"); "" as () when allowed."""
        value = self.text(node, path, allow_empty=allow_empty)
        if value is None:
            return None
        if value == "":
            return ()
        parts = tuple(value.split("."))
        if not all(parts):
            self.problem(node.line, path, f"{value!r} is not a dotted path (an empty part)")
            return None
        return parts

    def integer(self, minimum: int, why: str = "") -> Reader[int]:
        def read(node: Node, path: str) -> int | None:
            value = node.value if isinstance(node, Scalar) else None
            if not isinstance(value, int) or isinstance(value, bool):
                self.wrong_type(node, path, "an integer")
                return None
            if value < minimum:
                self.problem(node.line, path, f"must be at least {minimum}{why}, found {value}")
                return None
            return value

        return read

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.wrong_type(node, path, "true or false")
        return None

    def parsed(self, parse: Callable[[str], T], get: Reader[str] | None = None) -> Reader[T]:
        """A string (read with `get`, default `text`) that `parse` turns into a
        value or refuses with a ValueError whose message becomes the problem."""

        def read(node: Node, path: str) -> T | None:
            value = (get or self.text)(node, path)
            if value is None:
                return None
            try:
                return parse(value)
            except ValueError as exc:
                self.problem(node.line, path, str(exc))
                return None

        return read


@dataclass(frozen=True)
class Fields:
    """The known entries of one mapping, read key by key."""

    reader: TreeReader
    node: Node
    path: str
    entries: dict[str, Node]

    def __contains__(self, key: str) -> bool:
        return not is_null(self.entries.get(key))

    def key_path(self, key: str) -> str:
        return join_path(self.path, key)

    def get(self, key: str) -> Node | None:
        node = self.entries.get(key)
        return None if is_null(node) else node

    def opt(self, key: str, read: Reader[T], default: T) -> T:
        """An optional key. An empty value (`key:` or `key: null`) means "not set"."""
        node = self.get(key)
        if node is None:
            return default
        value = read(node, self.key_path(key))
        return default if value is None else value

    def req(self, key: str, read: Reader[T], default: T) -> T:
        node = self.entries.get(key)
        if node is None:
            self.reader.problem(self.node.line, self.key_path(key), "missing required key")
            return default
        if is_null(node):
            self.reader.problem(node.line, self.key_path(key), "a value is required")
            return default
        return self.opt(key, read, default)
