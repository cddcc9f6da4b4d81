"""`syncd run` against what can go wrong around it: hostile files on reload, a database
that is away at start or at a reload, a bug in the loop, and the journal.

Real processes, as in tests/test_daemon.py; the database is taken away with a TCP gate
in front of the shared cluster (tests/netgate.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_source import DemoSource
from devtools.devcluster import Cluster, free_port
from tests.daemon_support import (
    WAIT,
    Daemons,
    child_env,
    daemon_config,
    db_now,
    is_ready,
    ok_runs_since,
    value_of,
    wait_for,
)
from tests.netgate import TcpGate, gate
from tests.support import MakeDemo, query, write_config
from tests.test_hostile_config import alias_bomb

SPAN = timedelta(days=1)


@pytest.fixture
def demo(make_demo: MakeDemo) -> DemoSource:
    now = datetime.now(UTC)
    return make_demo(
        counts={"task": 200, "inspection": 50, "user": 20, "entity": 10},
        start=now - SPAN,
        end=now - timedelta(minutes=5),
    )


@pytest.fixture
def db_gate(pg_cluster: Cluster) -> Iterator[TcpGate]:
    with gate(pg_cluster.port) as tcp:
        yield tcp


def through(dsn: str, cluster: Cluster, tcp: TcpGate) -> str:
    """`dsn`, reaching the cluster through the gate."""
    direct = f":{cluster.port}/"
    assert direct in dsn
    return dsn.replace(direct, f":{tcp.port}/") + "?connect_timeout=2"


def config_for(dsn: str, demo: DemoSource, entities: list[str]) -> tuple[dict[str, Any], int]:
    port = free_port()
    initial = datetime.now(UTC) - SPAN - timedelta(hours=1)
    return daemon_config(dsn, demo, port, entities=entities, initial_from=initial), port


def reloading(message: dict[str, str]) -> bool:
    return message.get("RELOADING") == "1"


# --- hostile files on SIGHUP ------------------------------------------------------------------

HOSTILE = {
    "ESC in a comment": "# stray \x1b\n",
    "NUL": "# \x00\n",
    "DEL": "x: \x7f\n",
    "10,000-deep nesting": "x: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "alias bomb": alias_bomb(9),
}


def test_hostile_files_on_sighup_are_refused_and_the_old_config_runs_on(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """A control byte, absurd nesting or an alias bomb in a reloaded file once ended the
    daemon with exit status 0. Each is a refused reload: RELOADING=1, READY=1 with a
    STATUS= saying why, and the daemon, its watchdog and its schedule go on."""
    data, port = config_for(pg_dsn, demo, ["task"])
    config = write_config(tmp_path, data)
    good = config.read_text()
    syncd = procs.start(config, port, env={"WATCHDOG_USEC": "2000000"})
    syncd.wait_ready()
    for name, tail in HOSTILE.items():
        config.write_text(good + tail)
        syncd.send(signal.SIGHUP)
        syncd.notify.wait_for(reloading, WAIT, f"RELOADING=1 for {name}")
        done = syncd.notify.wait_for(is_ready, WAIT, f"READY=1 after {name}")
        assert "reload refused, old config kept" in done.get("STATUS", ""), (name, done)
        assert syncd.alive(), f"{name}: syncd exited with {syncd.proc.poll()}"
        assert syncd.get("/healthz").status == 200
        refused_at = db_now(pg_dsn)
        wait_for(partial(ok_runs_since, pg_dsn, "task", refused_at), WAIT, f"a run after {name}")
        pings = syncd.notify.collect(1.5)
        assert any(m.get("WATCHDOG") == "1" for m in pings), f"{name}: no watchdog"
    assert value_of(syncd.metrics(), "syncd_config_last_reload_successful") == 0
    stderr = syncd.stderr_text()
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]


# --- the database away ------------------------------------------------------------------------


def test_starting_while_the_database_is_away_serves_http_and_keeps_systemd_waiting(
    tmp_path: Path,
    pg_dsn: str,
    pg_cluster: Cluster,
    db_gate: TcpGate,
    demo: DemoSource,
    procs: Daemons,
) -> None:
    """The port is bound first: /healthz 200, /readyz 503 with the reason, /metrics up
    (Prometheus sees the process); EXTEND_TIMEOUT_USEC keeps systemd from killing it at
    its start timeout; a SIGHUP meanwhile re-reads the file; READY=1 only once the
    database answers."""
    data, port = config_for(through(pg_dsn, pg_cluster, db_gate), demo, ["task"])
    (tmp_path / "ingest-api-key").write_text("k3y\n")
    data["http"]["api_key_file"] = str(tmp_path / "ingest-api-key")
    config = write_config(tmp_path, data)
    syncd = procs.start(config, port)
    syncd.notify.wait_for(lambda m: "EXTEND_TIMEOUT_USEC" in m, WAIT, "EXTEND_TIMEOUT_USEC")
    wait_for(lambda: _answers(port), WAIT, "the HTTP port")
    assert syncd.get("/healthz").status == 200

    def waiting() -> bool:  # "starting" until the first try at the database has failed
        ready = syncd.get("/readyz")
        assert ready.status == 503, ready
        return "waiting for the database" in ready.json()["error"]

    wait_for(waiting, WAIT, "/readyz to say it waits for the database")
    assert value_of(syncd.metrics(), "syncd_build_info") == 1
    status = syncd.get("/status")
    assert status.status == 503 and status.json()["error"].startswith("starting"), status
    push = syncd.post("/v1/ingest/task", b"[]", {"X-API-KEY": "k3y"})
    assert push.status == 503 and push.json()["error"].startswith("starting"), push
    assert syncd.post("/v1/sync/task", b"", {"X-API-KEY": "k3y"}).status == 503
    assert not any(is_ready(m) for m in syncd.notify.messages)

    # The operator fixes the file meanwhile and reloads: the next try uses it.
    more, _ = config_for(through(pg_dsn, pg_cluster, db_gate), demo, ["task", "user"])
    more["http"] = data["http"]
    config = write_config(tmp_path, more)
    syncd.send(signal.SIGHUP)
    wait_for(lambda: "reload.done" in syncd.stderr_text(), WAIT, "the file re-read")
    db_gate.open()
    syncd.wait_ready(timeout=WAIT + 5)  # a SIGHUP also restarts the backoff
    assert syncd.get("/readyz").status == 200
    for entity in ("task", "user"):
        ever = datetime.min.replace(tzinfo=UTC)
        wait_for(partial(ok_runs_since, pg_dsn, entity, ever), WAIT, f"a run of {entity}")


def _answers(port: int) -> bool:
    from tests.daemon_support import http_call

    try:
        return http_call(port, "GET", "/healthz").status == 200
    except OSError:
        return False


def test_a_valid_reload_while_the_database_is_away_is_applied_and_migrated_on_its_return(
    tmp_path: Path,
    pg_dsn: str,
    pg_cluster: Cluster,
    db_gate: TcpGate,
    demo: DemoSource,
    procs: Daemons,
) -> None:
    """Only the file's own problems refuse a reload. With the database away, a valid file
    is applied (syncd_config_last_reload_successful 1, not an alert telling the operator
    to fix a good file), and the entity it adds gets its table when the database returns.
    Meanwhile /status answers 503 with one warning line, not a traceback per request."""
    db_gate.open()
    data, port = config_for(through(pg_dsn, pg_cluster, db_gate), demo, ["task"])
    config = write_config(tmp_path, data)
    syncd = procs.start(config, port)
    syncd.wait_ready()

    db_gate.shut()
    more, _ = config_for(through(pg_dsn, pg_cluster, db_gate), demo, ["task", "user"])
    more["http"] = data["http"]
    write_config(tmp_path, more)
    syncd.send(signal.SIGHUP)
    syncd.notify.wait_for(reloading, WAIT, "RELOADING=1")
    done = syncd.notify.wait_for(is_ready, WAIT, "READY=1 after the reload")
    assert "reloaded" in done.get("STATUS", ""), done
    assert value_of(syncd.metrics(), "syncd_config_last_reload_successful") == 1
    for _ in range(10):
        reply = syncd.get("/status")
        assert reply.status == 503 and reply.json()["error"].startswith("database:"), reply

    db_gate.open()
    wait_for(
        partial(ok_runs_since, pg_dsn, "user", datetime.min.replace(tzinfo=UTC)),
        WAIT + 10,
        "an ok run of the added entity once the database is back",
    )
    assert query(pg_dsn, "SELECT count(*) FROM user_details")[0][0] > 0
    assert syncd.get("/status").status == 200
    logs = [json.loads(line) for line in syncd.stderr_text().splitlines() if line.startswith("{")]
    status_lines = [entry for entry in logs if entry.get("path") == "/status"]
    assert [entry["event"] for entry in status_lines] == ["http.unavailable"], status_lines
    assert not any("exception" in entry for entry in status_lines)


# --- a bug in the loop ------------------------------------------------------------------------

_BROKEN_LOOP = """
import sys
from syncd.cli import main as cli
from syncd.service import daemon

def broken(self, result):
    raise RuntimeError("an injected bug")

daemon.Daemon._job_done = broken
sys.exit(cli.main(["-c", sys.argv[1], "run"]))
"""


def test_an_unexpected_error_in_the_loop_exits_non_zero_with_its_cause_logged_first(
    tmp_path: Path, pg_dsn: str, demo: DemoSource
) -> None:
    """Exit 0 means "asked to stop" (and Restart=on-failure would not restart the
    service): a crash is exit 1, its traceback in the log first."""
    data, _ = config_for(pg_dsn, demo, ["task", "user", "inspection", "entity"])
    config = write_config(tmp_path, data)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_BROKEN_LOOP), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    crashed = [i for i, line in enumerate(lines) if '"event": "daemon.crashed"' in line]
    assert crashed, done.stderr[-3000:]
    assert "an injected bug" in lines[crashed[0]] and "Traceback" in lines[crashed[0]]
    # Then either the command's own last line, or (syncs were running, and a crashed
    # loop cannot wait for them) the warning that they were cut short.
    assert lines[-1].startswith("syncd: internal error: RuntimeError: an injected bug") or (
        '"event": "daemon.stopped_with_running_syncs"' in lines[-1]
    ), lines[-1]


# --- the journal ------------------------------------------------------------------------------


def test_lines_to_the_journal_carry_their_syslog_priority(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """When stderr is the journal ($JOURNAL_STREAM names its device and inode), each line
    starts with `<N>` (sd-daemon(3)), so `journalctl -p err` finds the errors."""
    data, port = config_for(pg_dsn, demo, ["task"])
    data["entities"]["task"]["url"] = f"http://127.0.0.1:{free_port()}/nothing-listens"
    data["source"]["retries"] = {"attempts": 1}
    stderr = tmp_path / "journald.stderr"
    stderr.write_bytes(b"")
    stat = os.stat(stderr)
    env = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
    syncd = procs.start(write_config(tmp_path, data), port, env=env, name="journald")
    syncd.wait_ready()
    wait_for(lambda: "<3>" in syncd.stderr_text(), WAIT, "an error line")
    syncd.send(signal.SIGTERM)
    assert syncd.wait_exit(WAIT) == 0
    lines = syncd.stderr_text().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    levels = {json.loads(line[3:])["level"]: line[:3] for line in lines}
    assert levels["info"] == "<6>" and levels["error"] == "<3>", levels

    # Redirected to a file instead (the inode differs): no prefix.
    plain = tmp_path / "plain.stderr"
    other = procs.start(write_config(tmp_path, data), port, env=env, name="plain")
    other.wait_ready()
    other.send(signal.SIGTERM)
    assert other.wait_exit(WAIT) == 0
    assert other.stderr_text().startswith("{"), plain


# --- the HTTP port under abuse ----------------------------------------------------------------


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def test_slow_clients_and_huge_heads_leave_the_daemon_answering_in_bounded_memory(
    tmp_path: Path, pg_dsn: str, demo: DemoSource, procs: Daemons
) -> None:
    """200 slowloris sockets once failed /healthz in 32 of 40 polls; 16 heads of 99
    headers x 65 KB took RSS from 157 MB to 508 MB, 396 MB of it kept."""
    data, port = config_for(pg_dsn, demo, ["user"])
    syncd = procs.start(write_config(tmp_path, data), port)
    syncd.wait_ready()
    slow = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        slow.append(sock)
    try:
        for _ in range(10):
            assert syncd.get("/healthz").status == 200
            for sock in slow[:20]:
                sock.sendall(b"a")
    finally:
        for sock in slow:
            sock.close()

    head = b"GET /healthz HTTP/1.1\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"a" * 65_000) for i in range(99)
    )
    before = _rss_mb(syncd.pid, "VmRSS")
    for _ in range(16):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            with contextlib.suppress(OSError):  # answered before it was all sent
                sock.sendall(head + b"\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert _rss_mb(syncd.pid, "VmHWM") < before + 50
    assert syncd.get("/healthz").status == 200
