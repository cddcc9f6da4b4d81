"""Hostile configuration files: each is a configuration error like any other.

One `FILE:LINE: message` line on stderr, exit 2, within seconds and in bounded memory,
never a traceback and never "internal error". (A reload of such a file is refused by
the running daemon: tests/test_daemon_hostile.py.)"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncd.config.loader import load_config
from syncd.errors import ConfigError
from tests.test_config import MINIMAL, write

# A config error line: FILE:LINE: [key.path: ]message
PROBLEM = re.compile(r"^(?P<file>/[^:]+):(?P<line>[0-9]+): (?P<rest>.+)$")


def check_config(path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SYNCD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def refused(path: Path) -> tuple[list[str], float]:
    """Run check-config on `path`; assert it is refused as a config error; return the
    stderr lines and how long it took."""
    started = time.monotonic()
    done = check_config(path)
    seconds = time.monotonic() - started
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert lines and all(PROBLEM.match(line) for line in lines), lines
    return lines, seconds


def alias_bomb(levels: int) -> str:
    """Each level is a list of nine aliases of the one before: 9**levels values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "byte"),
    [("ESC", "\x1b"), ("NUL", "\x00"), ("DEL", "\x7f"), ("BEL", "\x07"), ("C1", "\x9b")],
)
def test_a_control_byte_anywhere_is_a_config_error_naming_its_line(
    tmp_path: Path, name: str, byte: str
) -> None:
    """A stray control byte, even in a comment, names the character and its line."""
    path = write(tmp_path, MINIMAL + f"# stray {byte}\n")
    lines, _ = refused(path)
    assert lines == [
        f"{path}:12: invalid YAML: the character U+{ord(byte):04X} is not allowed "
        "(only tab, newlines and printable characters are)"
    ]


@pytest.mark.parametrize(
    "nested",
    [
        "x: " + "[" * 10_000 + "]" * 10_000,
        "x: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        "".join(f"{'  ' * depth}k:\n" for depth in range(200)) + "  " * 200 + "v\n",
        "x: " + "[" * 70 + "]" * 70,
    ],
    ids=["flow-lists-10000", "flow-maps-10000", "block-200", "flow-70"],
)
def test_absurd_nesting_is_a_config_error(tmp_path: Path, nested: str) -> None:
    lines, _ = refused(write(tmp_path, MINIMAL + nested + "\n"))
    assert "nest" in lines[0], lines


def test_an_alias_bomb_is_refused_within_seconds(tmp_path: Path) -> None:
    """Nine levels would be 387 million values: refused by counting, not by expanding."""
    lines, seconds = refused(write(tmp_path, MINIMAL + alias_bomb(9)))
    assert "expands to more than 1,000,000 values" in lines[0]
    assert seconds < 10, f"check-config took {seconds:.1f}s"


def test_nesting_through_aliases_counts_the_alias_depth(tmp_path: Path) -> None:
    """An alias of a deep list placed deep again is as deep as both together."""
    deep = "[" * 40 + "]" * 40
    text = MINIMAL + f"a: &deep {deep}\nb: {'[' * 40}*deep{']' * 40}\n"
    lines, _ = refused(write(tmp_path, text))
    assert "nested deeper than 64 levels" in lines[0]


def test_a_number_of_a_thousand_characters_is_refused_unread(tmp_path: Path) -> None:
    """PyYAML reads base-60 numbers (`1:2:3`) in time that grows with the square of
    their length: 80,000 parts took 1.8 s, a megabyte would take minutes."""
    text = MINIMAL + "x: " + ":".join(["1"] * 40_000) + "\n"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"syncd\.yaml:12: x: a number of more than 100"):
        load_config(write(tmp_path, text), {})
    assert time.monotonic() - started < 1


def test_a_recursive_alias_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an alias refers to its own parent"):
        load_config(write(tmp_path, MINIMAL + "x: &a [1, *a]\n"), {})


def test_an_undefined_alias_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"syncd.yaml:12: invalid YAML: the alias \*nope"):
        load_config(write(tmp_path, MINIMAL + "x: *nope\n"), {})


def test_two_documents_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"syncd\.yaml:12: invalid YAML: expected one document"):
        load_config(write(tmp_path, MINIMAL + "---\nx: 1\n"), {})


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "syncd.yaml"
    with path.open("w") as out:
        out.write(MINIMAL)
        out.write("# padding\n" * (2 * 1024 * 1024))  # 20 MiB
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        load_config(path, {})


# --- values that would overflow at run time ---------------------------------------------------

_WINDOW = '    window: {initial_from: "2024-01-01 00:00:00"}\n'


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            _WINDOW,
            '    window: {initial_from: "2024-01-01 00:00:00", lookback: 999999999d}\n',
            "entities.task.window.lookback",
            "'999999999d' is longer than 3650d",
        ),
        (
            _WINDOW,
            '    window: {initial_from: "2024-01-01 00:00:00", max: 999999999d}\n',
            "entities.task.window.max",
            "longer than 3650d",
        ),
        (
            _WINDOW,
            '    window: {initial_from: "0001-01-01 00:00:00"}\n',
            "entities.task.window.initial_from",
            "the year must be between 1900 and 9000",
        ),
        (
            _WINDOW,
            _WINDOW + "    source: {timeout: 999999999d}\n",
            "entities.task.source.timeout",
            "longer than 3650d",
        ),
        (
            _WINDOW,
            _WINDOW + "    schedule: {every: 99999999999999999999d}\n",
            "entities.task.schedule.every",
            "longer than 3650d",
        ),
        (
            _WINDOW,
            _WINDOW + "    source: {page_size: 100000000000000000000}\n",
            "entities.task.source.page_size",
            "must be at most 100000",
        ),
        (
            _WINDOW,
            '    preload: {from: "2024-01-01", chunk: 99999y}\n',
            "entities.task.preload.chunk",
            "longer than 100 years",
        ),
        (
            "url: http://source.test/tasks",
            "url: http://source.test:99999/tasks",
            "entities.task.url",
            "a port up to 65535",
        ),
        (
            "table: task_details",
            'table: "task\\0details"',
            "entities.task.table",
            "contains the control character U+0000",
        ),
        (
            "url: http://source.test/tasks",
            'url: "http://source.test/ta\\esks"',
            "entities.task.url",
            "contains the control character U+001B",
        ),
    ],
)
def test_values_that_would_overflow_at_run_time_are_refused_at_load(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    [problem] = caught.value.problems
    assert f": {key}: " in problem and message in problem, problem


# --- secrets that cannot be looked up ------------------------------------------------------------


def test_a_secret_name_too_long_for_the_file_system_is_a_config_error(tmp_path: Path) -> None:
    """stat() failing for another reason than "no such file" (here ENAMETOOLONG)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    text = MINIMAL + f"http: {{api_key_file: {'k' * 300}}}\n"
    environ = {"CREDENTIALS_DIRECTORY": str(credentials)}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ)
    [problem] = caught.value.problems
    assert ":12: http.api_key_file: cannot read secret file" in problem


def _without_file_capabilities() -> None:
    """In the child, as root: give up overriding file permissions (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave the bounding set, so exec does not grant them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unsearchable_credentials_directory_is_a_config_error(tmp_path: Path) -> None:
    """`$CREDENTIALS_DIRECTORY` that syncd may not search: the usual one line and exit 2,
    naming the file and the reason, not `syncd: Permission denied` and exit 1."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ingest-api-key").write_text("k\n")
    path = write(tmp_path, MINIMAL + "http: {api_key_file: ingest-api-key}\n")
    if os.getuid() == 0:  # someone else's folder, which root without its capabilities
        nobody = pwd.getpwnam("nobody")  # may not search
        os.chown(credentials, nobody.pw_uid, nobody.pw_gid)
    credentials.chmod(0o700 if os.getuid() == 0 else 0o000)
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
    env.pop("SYNCD_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(path), "check-config"],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        preexec_fn=_without_file_capabilities if os.getuid() == 0 else None,
    )
    credentials.chmod(0o700)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{path}:12: http.api_key_file: cannot read secret file "
        f"'{credentials}/ingest-api-key': Permission denied"
    ]
