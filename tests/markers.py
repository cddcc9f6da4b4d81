"""Each test's markers (registered in pyproject.toml), set from what the test uses.

- `pg`: it requests the throwaway cluster, `pg_cluster` or `pg_dsn` (directly or
  through another fixture);
- `process`: its code, its fixtures or the helpers of `tests`/`devtools` they call
  start a child process (`subprocess`, `os.fork`, `os.system`...). A module the scan
  misjudges can say so itself with `pytestmark = pytest.mark.process`;
- `unit`: neither of those nor `packaging`: what `make test-fast` runs, in seconds.

Loaded through `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Iterator
from typing import Any

import pytest

PG_FIXTURES = frozenset({"pg_cluster", "pg_dsn"})
# Followed into: helpers whose code we can read and that may start processes.
OUR_PACKAGES = ("tests", "devtools", "bench")
# Attributes of `os` that start a process.
OS_SPAWNERS = frozenset(
    {"fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"}
    | {name for name in dir(os) if name.startswith(("exec", "spawn"))}
)
SPAWNING_MODULES = frozenset({"subprocess", "multiprocessing", "pty", "asyncio.subprocess"})


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """`code` and every function, lambda and comprehension defined inside it."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _codes(constant)


def _ours(value: Any) -> bool:
    module = getattr(value, "__module__", None) or ""
    return module.split(".")[0] in OUR_PACKAGES


def _functions_of(cls: type) -> Iterator[Any]:
    for member in vars(cls).values():
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        elif isinstance(member, property):
            yield from (f for f in (member.fget, member.fset) if f is not None)
            continue
        if inspect.isfunction(member):
            yield member


def _referenced(function: Any) -> Iterator[tuple[Any, frozenset[str]]]:
    """The global values `function`'s code names, each with all the names it uses."""
    code = getattr(function, "__code__", None)
    if code is None:
        return
    names = frozenset(name for c in _codes(code) for name in c.co_names)
    scope = function.__globals__
    for name in names:
        if name in scope:
            yield scope[name], names


def starts_processes(function: Any, seen: set[int] | None = None) -> bool:
    """Whether `function`, or one of our helpers it names (followed), starts a process."""
    function = inspect.unwrap(function)  # the function under @contextmanager and such
    seen = set() if seen is None else seen
    if id(function) in seen:
        return False
    seen.add(id(function))
    for value, names in _referenced(function):
        if isinstance(value, types.ModuleType):
            if value is os and names & OS_SPAWNERS:
                return True
            if value.__name__ in SPAWNING_MODULES:
                return True
            if value.__name__.split(".")[0] in OUR_PACKAGES:
                members = (getattr(value, name, None) for name in names)
                if any(_follow(member, seen) for member in members):
                    return True
        elif _follow(value, seen):
            return True
    return False


def _follow(value: Any, seen: set[int]) -> bool:
    if not _ours(value):
        return False
    if inspect.isclass(value):
        if id(value) in seen:
            return False
        seen.add(id(value))
        return any(starts_processes(f, seen) for f in _functions_of(value))
    if inspect.isfunction(value):
        return starts_processes(value, seen)
    return False


def _fixture_functions(item: pytest.Function) -> Iterator[Any]:
    """The functions of our fixtures `item` uses, but the cluster's: that one is `pg`.
    (pytest's own, tmp_path and such, start nothing.)"""
    for name, definitions in item._fixtureinfo.name2fixturedefs.items():
        if name in PG_FIXTURES:
            continue
        for definition in definitions:
            if _ours(definition.func):
                yield definition.func


def _starts_processes(item: pytest.Function) -> bool:
    seen: set[int] = set()
    return starts_processes(item.function, seen) or any(
        starts_processes(func, seen) for func in _fixture_functions(item)
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if PG_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.pg)
        if item.get_closest_marker("process") is None and _starts_processes(item):
            item.add_marker(pytest.mark.process)
        if not any(item.get_closest_marker(name) for name in ("pg", "process", "packaging")):
            item.add_marker(pytest.mark.unit)
