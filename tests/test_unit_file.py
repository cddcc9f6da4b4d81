"""syncd.service: what it promises syncd and operators, checked by systemd itself."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "syncd.service"
SAMPLE_CONFIG = ROOT / "etc" / "syncd.yaml"
EXEC_START = "ExecStart=/usr/bin/syncd run"
MAX_EXPOSURE = 1.2  # systemd-localed's figure; systemd-timesyncd scores 2.3


def _require_systemd_analyze(test: Any) -> Any:
    """No skipping: `make test` installs systemd-analyze (`make system-packages`), and
    a check that silently skips is a check that does not exist."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if shutil.which("systemd-analyze") is None:
            pytest.fail("systemd-analyze is missing: run `make system-packages` (package systemd)")
        return test(*args, **kwargs)

    return functools.wraps(test)(wrapper)


needs_systemd_analyze = _require_systemd_analyze


def settings(section: str) -> list[tuple[str, str]]:
    """The `Key=value` lines of one section, in order, repeated keys included."""
    current = None
    found = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        assert not line.endswith("\\"), "no continuation lines: keep each setting greppable"
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def service(key: str) -> list[str]:
    return [value for k, value in settings("Service") if k == key]


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "--no-pager", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )


def test_syncd_is_a_notify_service_and_only_its_main_process_may_notify() -> None:
    assert service("Type") == ["notify"]
    assert service("NotifyAccess") == ["main"]
    assert service("ExecStart") == [EXEC_START.partition("=")[2]]


def test_the_watchdog_is_on() -> None:
    (value,) = service("WatchdogSec")
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match and int(match[1]) > 0


def test_reload_sends_sighup_to_the_main_process() -> None:
    (command,) = service("ExecReload")
    assert re.fullmatch(r"/bin/kill -(HUP|SIGHUP|s HUP) \$MAINPID", command)


def test_stop_leaves_running_pages_time_to_commit_and_failures_restart() -> None:
    assert service("TimeoutStopSec")
    assert service("Restart") == ["on-failure"]


def test_syncd_runs_as_its_own_dynamic_user() -> None:
    assert service("DynamicUser") == ["yes"]
    assert service("StateDirectory") == ["syncd"]
    assert service("ConfigurationDirectory") == ["syncd"]
    assert service("Environment") == ["SYNCD_CONFIG=/etc/syncd/syncd.yaml"]


def test_the_three_secrets_come_in_as_credentials() -> None:
    loaded = dict(value.split(":", 1) for value in service("LoadCredential"))
    assert loaded == {
        name: f"/etc/syncd/credentials/{name}"
        for name in ("db-password", "ingest-api-key", "source-api-key")
    }


def test_every_secret_file_the_sample_config_names_is_a_credential() -> None:
    def file_values(node: object) -> set[str]:
        if isinstance(node, dict):
            return {v for k, v in node.items() if str(k).endswith("_file")} | {
                f for v in node.values() for f in file_values(v)
            }
        return {f for v in node for f in file_values(v)} if isinstance(node, list) else set()

    names = file_values(yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8")))
    loaded = {value.split(":", 1)[0] for value in service("LoadCredential")}
    assert names and names <= loaded


def test_proc_stat_stays_readable_for_the_process_metrics() -> None:
    assert service("ProcSubset") in ([], ["all"])


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    # `verify` insists that ExecStart's program exists, and /usr/bin/syncd is only there
    # once syncd is installed. So verify a copy whose ExecStart runs this Python instead;
    # every other line is the shipped unit's. (`--root=` is no way out: it would also
    # need sysinit.target, /bin/kill, ... inside that root.)
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(EXEC_START + "\n") == 1
    copy = tmp_path / "syncd.service"
    copy.write_text(text.replace(EXEC_START, f"ExecStart={sys.executable} run"), encoding="utf-8")
    result = run_analyze("verify", str(copy))
    assert result.stderr == ""
    assert result.returncode == 0


@needs_systemd_analyze
def test_the_sandbox_rates_an_overall_exposure_of_at_most_1_2() -> None:
    # `security --offline` only reads the file: the shipped unit is rated as it is.
    result = run_analyze("security", "--offline=true", str(UNIT))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    match = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout
