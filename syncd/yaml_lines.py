"""YAML read into a small tree that remembers where every value was written.

`yaml.safe_load` forgets line numbers, but configuration errors must say
`FILE:LINE: key.path: message`. So the document is composed into PyYAML nodes
(which carry marks) and turned into `Scalar`/`Seq`/`Map` objects that keep the
line. Duplicate keys, which PyYAML silently resolves to the last one, are
reported here instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import yaml

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


@dataclass(frozen=True)
class YamlProblem:
    line: int
    path: str  # dotted key path; "" for the document as a whole
    message: str


def join_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, Scalar) and node.value is None)


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
    # Only `problem`/`context` are used: str(exc) quotes a snippet of the file,
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
                self.problems.append(
                    YamlProblem(key_line, path, "a key must be a name, not a list or mapping")
                )
                continue
            # Keys are taken as written: `on:` or `1:` are names here, not a boolean/number.
            key = str(key_node.value)
            key_path = join_path(path, key)
            if key in entries:
                first = entries[key].line
                self.problems.append(
                    YamlProblem(key_line, key_path, f"duplicate key (first given on line {first})")
                )
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
            self.problems.append(YamlProblem(line, path, "`<<` must merge a mapping or a list of mappings"))
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
