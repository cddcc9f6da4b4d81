"""Helpers for the tests that run a real `syncd run` process.

Each daemon gets its own bound AF_UNIX datagram socket as NOTIFY_SOCKET (what systemd
would read), a free port for `http.listen`, and its stdout and stderr in files (so
neither is a terminal: logs are JSON lines). `Daemons` is a fixture-friendly registry
that kills whatever is still running when the test ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devtools.demo_config import demo_config
from devtools.demo_source import DemoSource
from devtools.devcluster import free_port

# wait_for lives in tests.support; the daemon tests import it from here too.
from tests.support import query, write_config
from tests.support import wait_for as wait_for

WAIT = 10.0  # seconds: the longest any single expected event may take to arrive
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Variables of the environment this test runs in that would change what syncd does.
_SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SYNCD_CONFIG", "LISTEN_FDS")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(extra or {})
    return env


def clock_off_by(seconds: float) -> dict[str, str]:
    """The environment that sets a child's wall clock `seconds` off the real one, by
    preloading libfaketime (Debian's libfaketime; `make test` installs it). The
    monotonic clock stays true, as it does on a host whose wall clock is wrong."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    assert found, "libfaketime is missing: install Debian's libfaketime (make test does)"
    return {
        "LD_PRELOAD": str(found[0]),
        "FAKETIME": f"{seconds:+.3f}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",  # read FAKETIME once, not from a cached file
    }


def daemon_config(
    dsn: str,
    demo: DemoSource,
    port: int,
    *,
    entities: list[str] | None = None,
    initial_from: datetime,
    every: str = "1s",
) -> dict[str, Any]:
    """The demo configuration, every entity on `{every: ...}`, listening on `port`."""
    data = demo_config(
        dsn,
        demo.base_url,
        entities=entities,
        initial_from=initial_from.strftime(TIME_FORMAT),
        listen=f"127.0.0.1:{port}",
    )
    for entity in data["entities"].values():
        entity["schedule"] = {"every": every}
        entity["window"]["max"] = "7d"
    return data


# --- sd_notify ------------------------------------------------------------------------


def parse_notify(data: bytes) -> dict[str, str]:
    text = data.decode("latin-1")
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


class NotifySocket:
    """A bound datagram socket standing in for systemd's.

    Like systemd, it reads at once whatever arrives (in a thread): the kernel queues
    only a few datagrams per socket, and a sender finding the queue full blocks.
    `receive` hands the messages over in order (each as its `KEY=value` lines);
    `messages` keeps every one handed over."""

    def __init__(self) -> None:
        # A short folder of its own: AF_UNIX paths are limited to 107 bytes.
        self.folder = tempfile.mkdtemp(prefix="syncd-notify-")
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        self._inbox: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._inbox.put(parse_notify(data))

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next message, or None if none came within `timeout` seconds."""
        try:
            message = self._inbox.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None
        self.messages.append(message)
        return message

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float, what: str
    ) -> dict[str, str]:
        """Read messages until one matches `predicate`; fail after `timeout` seconds."""

        def matching() -> dict[str, str] | None:
            message = self.receive(0.05)  # blocks: no need to sleep between reads
            return message if message is not None and predicate(message) else None

        def described() -> str:
            seen = [m for m in self.messages if m.get("WATCHDOG") != "1"][-10:]
            return f"{what}; last messages: {seen}"

        found: dict[str, str] = wait_for(matching, timeout, described, every=0)
        return found

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message received during the next `seconds` seconds (and any pending)."""
        deadline = time.monotonic() + seconds
        got: list[dict[str, str]] = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def is_ready(message: dict[str, str]) -> bool:
    return message.get("READY") == "1"


# --- HTTP -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()


Sample = tuple[str, dict[str, str], float]


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition: (name, labels, value)."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value_of(found: list[Sample], name: str, **labels: str) -> float | None:
    for sample_name, sample_labels, value in found:
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


# --- the daemon process ---------------------------------------------------------------


@dataclass
class Syncd:
    """One `syncd -c CONFIG run` process and what it is connected to."""

    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    notify: NotifySocket
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> Reply:
        return http_call(self.port, "GET", path)

    def post(self, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        return http_call(self.port, "POST", path, body, headers)

    def metrics_text(self) -> str:
        reply = self.get("/metrics")
        assert reply.status == 200, reply
        return reply.text

    def metrics(self) -> list[Sample]:
        return samples(self.metrics_text())

    def wait_ready(self, timeout: float = WAIT) -> dict[str, str]:
        return self.notify.wait_for(is_ready, timeout, "READY=1")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"syncd (pid {self.pid}) still running after {timeout}s; "
                f"stderr tail: {self.stderr_text()[-2000:]}"
            ) from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout_text(self) -> str:
        return self.stdout.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")


class Daemons:
    """Starts syncd processes; `close` kills and reaps whatever is still running."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Syncd] = []

    def start(
        self,
        config: Path,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Syncd:
        notify = NotifySocket()
        label = name or f"syncd-{len(self.started)}"
        stdout = self.folder / f"{label}.stdout"
        stderr = self.folder / f"{label}.stderr"
        environment = child_env({"NOTIFY_SOCKET": notify.path, **(env or {})})
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "-c", str(config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=environment,
            )
        daemon = Syncd(proc, port, config, notify, stdout, stderr)
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=10)
            daemon.notify.close()


@contextlib.contextmanager
def daemons(folder: Path) -> Iterator[Daemons]:
    registry = Daemons(folder)
    try:
        yield registry
    finally:
        registry.close()


# --- the run log ----------------------------------------------------------------------


def syncd_sessions(dsn: str) -> int:
    """Server sessions of syncd processes on this database. A killed client's backend
    lingers until the server notices; until then it may still hold a lock (an entity's,
    a preload's) or a commit it sent may still land."""
    [(count,)] = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'syncd'",
    )
    return int(count)


def runs(dsn: str, entity: str | None = None) -> list[dict[str, Any]]:
    """`sync_time` rows, oldest first, as dicts."""
    columns = (
        "id, entity, kind, status, started_at, finished_at, window_from, window_to, error, pid"
    )
    where = "" if entity is None else "WHERE entity = %s"
    params = () if entity is None else (entity,)
    rows = query(dsn, f"SELECT {columns} FROM sync_time {where} ORDER BY id", params)
    names = [name.strip() for name in columns.split(",")]
    return [dict(zip(names, row, strict=True)) for row in rows]


def db_now(dsn: str) -> datetime:
    [(now,)] = query(dsn, "SELECT clock_timestamp()")
    assert isinstance(now, datetime)
    return now


def ok_runs_since(dsn: str, entity: str, moment: datetime, pid: int | None = None) -> int:
    return sum(
        1
        for run in runs(dsn, entity)
        if run["status"] == "ok"
        and run["started_at"] > moment
        and (pid is None or run["pid"] == pid)
    )


def start_instances(
    procs: Daemons,
    folder: Path,
    dsn: str,
    demo: DemoSource,
    names: Sequence[str],
    *,
    entities: list[str],
    initial_from: datetime,
    every: str = "1s",
    schedule: Mapping[str, Any] | None = None,
    clock_offsets: Mapping[str, float] | None = None,
) -> list[Syncd]:
    """One `syncd run` per name on the same database and source, each on its own port
    and configuration file, all ready. `schedule` replaces `{every: ...}`;
    `clock_offsets` sets some instances' wall clocks off by that many seconds."""
    instances = []
    for name in names:
        port = free_port()
        data = daemon_config(
            dsn, demo, port, entities=entities, initial_from=initial_from, every=every
        )
        if schedule is not None:
            for entity in data["entities"].values():
                entity["schedule"] = dict(schedule)
        offset = (clock_offsets or {}).get(name)
        env = None if offset is None else clock_off_by(offset)
        config = write_config(folder, data, name=f"{name}.yaml")
        instances.append(procs.start(config, port, name=name, env=env))
    for syncd in instances:
        syncd.wait_ready()
    return instances
