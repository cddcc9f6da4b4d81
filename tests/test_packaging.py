"""What ships: the wheel holds the `syncd` package only, and `syncd`'s imports keep to
its layers (docs/architecture.md).

The layers, lowest first: the root modules (`syncd/*.py`: errors, logs, metrics, runs),
`columns`, `config`, `db`, `sync`, then `http` and `ingest` side by side, `service`,
`cli`.
A module imports only from its own package and from layers below its own; `http` and
`ingest` import neither each other nor anything above; no two modules import each other,
however indirectly. The development tools (`devtools`, `bench`) and `tests` are never
imported by `syncd`.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "syncd"
NOT_SHIPPED = ("devtools", "bench", "tests")
# Rank of each subpackage; "" is the root modules (errors, runs, metrics, logs), which
# import no subpackage. Equal ranks may not import each other.
LAYERS = {
    "": 0,
    "columns": 1,
    "config": 2,
    "db": 3,
    "sync": 4,
    "http": 5,
    "ingest": 5,
    "service": 6,
    "cli": 7,
}
# `python -m syncd` starts the command line: the one root module above every layer.
ENTRY_POINT = "syncd.__main__"
# Breaches there were when these tests were written, each removed on a branch of the
# same restructuring (ingest's HTTP side moving to syncd.service; cli.common): delete an
# entry once its fix is merged. A fixed entry only warns, whatever the merge order.
KNOWN_BREACHES: set[str] = set()
KNOWN_CYCLES: set[str] = set()
# Left out of the copy the wheel is built from: none of it belongs in a wheel, and a
# stale build/ would otherwise be packed as it is.
BUILD_LITTER = (".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", ".*_cache")


# --- the wheel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip wheel` builds from a clean copy of this tree (no build isolation:
    no download, a second or two)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_LITTER), symlinks=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--quiet", "--wheel-dir", str(work / "out"), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = (work / "out").glob("syncd-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_the_syncd_package_and_its_metadata_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    outside = [n for n in names if not n.startswith(("syncd/", "syncd-"))]
    assert outside == []
    metadata = {n.split("/")[0] for n in names if n.startswith("syncd-")}
    assert len(metadata) == 1 and metadata.pop().endswith(".dist-info"), names


def test_the_wheel_holds_no_development_tool(wheel: zipfile.ZipFile) -> None:
    """Neither the demo source nor the dev cluster, the benchmarks or the tests."""
    unwanted = ("devtools", "bench", "tests", "demo", "devcluster", "conftest")
    found = [n for n in wheel.namelist() if any(word in n.lower() for word in unwanted)]
    assert found == []


def test_the_wheel_holds_every_module_of_the_source_tree(wheel: zipfile.ZipFile) -> None:
    shipped = {n for n in wheel.namelist() if n.endswith(".py")}
    assert shipped == {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")}


def test_the_syncd_command_is_the_cli(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "syncd = syncd.cli.main:main" in wheel.read(entry_points).decode()


# --- imports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted name of a syncd module, or of whatever else was imported
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"

    @property
    def edge(self) -> str:
        return f"{self.importer} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def syncd_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import in module `name`, in functions and under `if TYPE_CHECKING:` too.
    `from syncd.x import y` is module syncd.x.y when that exists, else syncd.x;
    relative imports are resolved."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                if path.name != "__init__.py":
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            yield Import(name, target, node.lineno)


def all_imports() -> list[Import]:
    modules = syncd_modules()
    return [found for name, path in modules.items() for found in imports_of(name, path, modules)]


def layer_of(module: str) -> str | None:
    """The subpackage `module` is in, "" for the root modules; None: not syncd's."""
    parts = module.split(".")
    if parts[0] != "syncd":
        return None
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return ""


def test_every_subpackage_has_a_layer() -> None:
    """A new subpackage needs its place among the layers (LAYERS above and
    docs/architecture.md) before anything can be said about its imports."""
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages - LAYERS.keys() == set()


def test_syncd_imports_nothing_of_the_development_tools_or_the_tests() -> None:
    wrong = [str(i) for i in all_imports() if i.imported.split(".")[0] in NOT_SHIPPED]
    assert wrong == []


def test_syncd_names_no_development_tool_module_to_import_at_run_time() -> None:
    """No `importlib.import_module("devtools...")` or `__import__("tests...")` either."""
    wrong = []
    for name, path in syncd_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and node.args:
                called = ast.unparse(node.func)
                argument = node.args[0]
                if (
                    called in ("importlib.import_module", "import_module", "__import__")
                    and isinstance(argument, ast.Constant)
                    and str(argument.value).split(".")[0] in NOT_SHIPPED
                ):
                    wrong.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert wrong == []


def warn_if_fixed(known: set[str], found: set[str]) -> None:
    if fixed := known - found:
        warnings.warn(f"fixed, delete from tests/test_packaging.py: {sorted(fixed)}", stacklevel=2)


def test_imports_only_go_down_the_layers() -> None:
    wrong = []
    known = set()
    for found in all_imports():
        if found.importer == ENTRY_POINT:
            continue
        source, target = layer_of(found.importer), layer_of(found.imported)
        if source is None or target is None or source == target:
            continue  # outside syncd, or within one package (cycles: the test below)
        if source not in LAYERS or target not in LAYERS:
            continue  # test_every_subpackage_has_a_layer says so
        if found.edge in KNOWN_BREACHES:
            known.add(found.edge)
        elif LAYERS[target] >= LAYERS[source]:
            wrong.append(f"{found} ({source or 'root'} -> {target or 'root'})")
    warn_if_fixed(KNOWN_BREACHES, known)
    assert wrong == []


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle between syncd's modules: a cycle means neither module can be
    understood, tested or moved without the other."""
    graph: dict[str, set[str]] = {name: set() for name in syncd_modules()}
    for found in all_imports():
        if found.imported in graph and found.imported != found.importer:
            graph[found.importer].add(found.imported)
    in_a_cycle = {name for name in graph if name in reachable(graph, name)}
    warn_if_fixed(KNOWN_CYCLES, in_a_cycle)
    assert sorted(in_a_cycle - KNOWN_CYCLES) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen
