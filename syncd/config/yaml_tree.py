"""YAML read into a small tree that remembers where every value was written.

`yaml.safe_load` forgets line numbers, but configuration errors must say
`FILE:LINE: key.path: message`. So the document is read from PyYAML's event stream
(whose events carry marks) into `Scalar`/`Seq`/`Map` objects that keep the line.
Duplicate keys, which PyYAML silently resolves to the last one, are reported instead.

The builder also guards against hostile files: characters YAML does not allow,
aliases that expand without end, nesting thousands deep and numbers too long to
convert are refused at once, in bounded memory and time. Reading typed values out
of the tree is `syncd.config.tree_reader`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import yaml


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

# Bounds no real configuration comes near, so that a hostile file (YAML aliases that
# expand without end, nesting thousands deep) is refused at once, in bounded memory,
# instead of running for minutes or overflowing the stack. A thousand entities with
# ten columns each make about 80,000 values, nested 6 deep.
MAX_DEPTH = 64
MAX_VALUES = 1_000_000  # every mapping, list and scalar, each alias counted expanded
MAX_NUMBER = 100  # characters of a number
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

# What YAML allows in a file: tab, newlines and printable characters (YAML 1.1, 5.1).
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# libyaml parses several times faster than PyYAML's pure-Python parser, and gives the
# same events and marks; it is in PyYAML's wheels, but may be missing from a build.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """The document is beyond what a configuration can be: stop reading it."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.problem = YamlProblem(line, "", message)


def compose(text: str) -> tuple[Node | None, list[YamlProblem]]:
    """Parse one YAML document. Returns (None, []) for an empty document and
    (None, [problem]) when the text is not YAML or exceeds MAX_DEPTH or MAX_VALUES."""
    bad = _NOT_YAML.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        message = (
            f"invalid YAML: the character U+{ord(bad[0]):04X} is not allowed "
            "(only tab, newlines and printable characters are)"
        )
        return None, [YamlProblem(line, "", message)]
    loader = None
    try:
        loader = _Loader(text)
        builder = _Builder(loader)
        return builder.document(), builder.problems
    except _Refused as refused:
        return None, [refused.problem]
    except yaml.YAMLError as exc:
        return None, [_syntax_problem(exc)]
    finally:
        if loader is not None:
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


@dataclass
class _Open:
    """A mapping or list whose end event has not come yet."""

    line: int  # where it is declared (its key's line inside a mapping)
    path: str
    anchor: str | None
    items: list[Node] | None  # a list's items; None for a mapping
    entries: dict[str, Node] = field(default_factory=dict)
    merged: list[Map] = field(default_factory=list)
    # A mapping between its key and that key's value: the key, the key's line, and
    # what to do with the value (store it, merge it, or drop it after a problem).
    key: tuple[str, int, str] | None = None
    values: int = 1  # itself and everything in it, aliases expanded
    height: int = 1  # levels, itself included


class _Builder:
    """Builds the tree from PyYAML's event stream, iteratively: no recursion, so no
    nesting can overflow the stack, and aliases are counted as they are expanded."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader  # a yaml.CSafeLoader or yaml.SafeLoader
        self._open: list[_Open] = []
        # anchor -> (the node, values in it, its height); None while it is still open.
        self._anchors: dict[str, tuple[Node, int, int] | None] = {}
        self._values = 0
        self._root: Node | None = None
        self.problems: list[YamlProblem] = []

    def document(self) -> Node | None:
        loader = self._loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        while not loader.check_event(yaml.DocumentEndEvent):
            self._event(loader.get_event())
        loader.get_event()
        if not loader.check_event(yaml.StreamEndEvent):
            line = loader.peek_event().start_mark.line + 1
            raise _Refused(line, "invalid YAML: expected one document, found another")
        return self._root

    def _event(self, event: Any) -> None:
        line = event.start_mark.line + 1
        if isinstance(event, yaml.ScalarEvent):
            self._scalar(event, line)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(str(event.anchor), line)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            is_list = isinstance(event, yaml.SequenceStartEvent)
            decl_line, path = self._position(line)
            self._open.append(_Open(decl_line, path, event.anchor, [] if is_list else None))
            if event.anchor is not None:
                self._anchors[event.anchor] = None
            if len(self._open) > MAX_DEPTH:
                raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            done = self._open.pop()
            node: Node
            if done.items is not None:
                node = Seq(done.line, tuple(done.items))
            else:
                # Keys written in the mapping itself win over merged ones; among merged
                # mappings the first listed wins (YAML merge-key semantics).
                for source in done.merged:
                    for key, value in source.entries.items():
                        done.entries.setdefault(key, value)
                node = Map(done.line, done.entries)
            if done.anchor is not None:
                self._anchors[done.anchor] = (node, done.values, done.height)
            self._place(node, done.values, done.height, line)

    def _position(self, line: int) -> tuple[int, str]:
        """The line and key path of a value starting on `line`: inside a mapping, its
        key's (what a reader looks for, even when the value starts on the next line)."""
        if not self._open:
            return line, ""
        parent = self._open[-1]
        if parent.items is not None:
            return line, f"{parent.path}[{len(parent.items)}]"
        if parent.key is None:
            return line, parent.path  # a key
        key, key_line, _ = parent.key
        return key_line, join_path(parent.path, key)

    def _scalar(self, event: Any, line: int) -> None:
        parent = self._open[-1] if self._open else None
        if parent is not None and parent.items is None and parent.key is None:
            self._key(parent, event, line)
            return
        decl_line, path = self._position(line)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        # libyaml says "" for a plain scalar's style, PyYAML None.
        style = event.style or None
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style)
        value: object = None
        if tag in _NUMBER_TAGS and len(event.value) > MAX_NUMBER:
            # PyYAML reads `1:2:3...` (base 60) in time that grows with the square of
            # its length: a long one would hold a reload for minutes.
            message = f"a number of more than {MAX_NUMBER} characters"
            self.problems.append(YamlProblem(decl_line, path, message))
        else:
            try:
                value = self._loader.construct_object(node)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                # e.g. an unknown `!tag`; the value itself is not echoed.
                message = f"cannot read a value tagged {tag}"
                self.problems.append(YamlProblem(decl_line, path, message))
        scalar = Scalar(decl_line, value, str(event.value), style is None)
        if event.anchor is not None:
            self._anchors[event.anchor] = (scalar, 1, 1)
        self._place(scalar, 1, 1, line)

    def _key(self, parent: _Open, event: Any, line: int) -> None:
        # Keys are taken as written: `on:` or `1:` are names here, not a boolean/number.
        key = str(event.value)
        if event.anchor is not None:
            self._anchors[event.anchor] = (Scalar(line, key, key, not event.style), 1, 1)
        self._take_key(parent, key, line, event.tag is None and not event.style)

    def _take_key(self, parent: _Open, key: str, line: int, plain: bool) -> None:
        action = "store"
        if plain and key == "<<":
            action = "merge"
        elif key in parent.entries:
            first = parent.entries[key].line
            message = f"duplicate key (first given on line {first})"
            self.problems.append(YamlProblem(line, join_path(parent.path, key), message))
            action = "drop"
        parent.key = (key, line, action)
        self._count(1, line)

    def _alias(self, anchor: str, line: int) -> None:
        if anchor not in self._anchors:
            raise _Refused(line, f"invalid YAML: the alias *{anchor} has no anchor &{anchor}")
        target = self._anchors[anchor]
        parent = self._open[-1] if self._open else None
        if target is None:
            decl_line, path = self._position(line)
            self.problems.append(YamlProblem(decl_line, path, "an alias refers to its own parent"))
            target = (Scalar(decl_line, None, "", True), 1, 1)
        node, values, height = target
        if parent is not None and parent.items is None and parent.key is None:
            if isinstance(node, Scalar):  # an aliased scalar as a key
                self._take_key(parent, node.text, line, node.plain)
            else:
                self.problems.append(
                    YamlProblem(line, parent.path, "a key must be a name, not a list or mapping")
                )
                parent.key = ("", line, "drop")
            return
        decl_line, _ = self._position(line)
        self._place(replace(node, line=decl_line), values, height, line)

    def _place(self, node: Node, values: int, height: int, line: int) -> None:
        """Put a finished node where it belongs: in its list or mapping, or at the root."""
        self._count(values, line)
        if len(self._open) + height > MAX_DEPTH:
            raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
        if not self._open:
            self._root = node
            return
        parent = self._open[-1]
        parent.values += values
        parent.height = max(parent.height, height + 1)
        if parent.items is not None:
            parent.items.append(node)
            return
        if parent.key is None:  # a list or mapping used as a key
            self.problems.append(
                YamlProblem(line, parent.path, "a key must be a name, not a list or mapping")
            )
            parent.key = ("", line, "drop")
            return
        key, key_line, action = parent.key
        parent.key = None
        if action == "store":
            parent.entries[key] = node
        elif action == "merge":
            candidates = node.items if isinstance(node, Seq) else (node,)
            maps = [candidate for candidate in candidates if isinstance(candidate, Map)]
            if len(maps) != len(candidates):
                message = "`<<` must merge a mapping or a list of mappings"
                self.problems.append(YamlProblem(key_line, parent.path, message))
            parent.merged.extend(maps)

    def _count(self, values: int, line: int) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _Refused(
                line,
                f"the document expands to more than {MAX_VALUES:,} values "
                "(YAML aliases repeated inside each other?)",
            )
