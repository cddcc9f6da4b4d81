"""Reading typed values out of a YAML tree (see `syncd.config.yaml_tree`), collecting
every problem as `FILE:LINE: key.path: message` instead of stopping at the first.

`TreeReader` has the generic readers (strings with `${VAR}`, integers, booleans,
dotted paths, mappings with a fixed set of keys); `Fields` reads the keys of one
mapping. The syncd schema is built on top of them (`syncd.config.value_readers` and
the section readers above it).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import TypeAlias, TypeVar

from syncd.config.yaml_tree import Map, Node, Scalar, Seq, is_null, join_path

T = TypeVar("T")

# Reads the value of a node found at a key path; None means a problem was recorded.
Reader: TypeAlias = Callable[[Node, str], T | None]


# No setting has a use for these; a NUL or an escape in a name, URL or format only
# fails later, further from its cause. (A double-quoted YAML string can hold them.)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")

# `$$`, `${NAME}`, or a `${` that is neither.
_REFERENCE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{))")


def kind_of(node: Node) -> str:
    """The kind of value a node holds ("a mapping", "a list", "nothing", "an integer
    (5)", ...), for `expected X, found Y`. Strings are never quoted back: they may be,
    or contain, something secret."""
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
    """The problem with a key not in `allowed`: the likely misspelling, or the choices."""
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
        self.problem(node.line, path, f"expected {expected}, found {kind_of(node)}")

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
        if value is None:
            return None
        control = _CONTROL.search(value)
        if control is not None:
            # The value is not quoted back (it may be secret); the character is named.
            message = f"contains the control character U+{ord(control[0]):04X}"
            self.problem(node.line, path, message)
            return None
        if not value.strip() and not allow_empty:
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

    def integer(self, minimum: int, why: str = "", maximum: int | None = None) -> Reader[int]:
        def read(node: Node, path: str) -> int | None:
            value = node.value if isinstance(node, Scalar) else None
            if not isinstance(value, int) or isinstance(value, bool):
                self.wrong_type(node, path, "an integer")
                return None
            if value < minimum:
                self.problem(node.line, path, f"must be at least {minimum}{why}, found {value}")
                return None
            if maximum is not None and value > maximum:
                self.problem(node.line, path, f"must be at most {maximum}, found {value}")
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
