"""Hostile input against a real `syncd run`, measured: the figures of the "probe | before |
after" table in the hardening notes. Not a test (nothing is asserted) and not part of
`make test`: it prints what it saw.

    .venv/bin/python -m tests.abuse_probe [--tree DIR]

`--tree` runs the syncd found in DIR (another checkout, say of an older commit) instead
of this one; the probe itself, the demo source and PostgreSQL come from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.demo_source import DemoSource
from devtools.devcluster import Cluster, free_port
from tests.daemon_support import NotifySocket, child_env, daemon_config, http_call
from tests.hostile_source import Reply, hostile_source
from tests.support import query, write_config
from tests.test_hostile_config import alias_bomb

ROOT = Path(__file__).resolve().parent.parent


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Probe:
    def __init__(self, tree: Path, folder: Path, dsn: str) -> None:
        self.tree = tree
        self.folder = folder
        self.dsn = dsn
        self.results: dict[str, str] = {}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({"PYTHONPATH": str(self.tree), **(extra or {})})

    def command(self, config: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "syncd", "-c", str(config), *args]

    @contextlib.contextmanager
    def daemon(
        self, data: dict[str, Any], port: int, name: str
    ) -> Iterator[tuple[subprocess.Popen[bytes], NotifySocket, Path]]:
        config = write_config(self.folder, data, f"{name}.yaml")
        notify = NotifySocket()
        stderr = (self.folder / f"{name}.stderr").open("wb")
        proc = subprocess.Popen(
            self.command(config, "run"),
            cwd=self.tree,
            env=self.env({"NOTIFY_SOCKET": notify.path}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            notify.wait_for(lambda m: m.get("READY") == "1", 30, "READY=1")
            yield proc, notify, config
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            stderr.close()
            notify.close()

    # -- the probes ------------------------------------------------------------------------

    def alias_bomb(self, levels: int = 7) -> None:
        path = self.folder / "bomb.yaml"
        path.write_text(alias_bomb(levels))
        began = time.monotonic()
        proc = subprocess.Popen(
            self.command(path, "check-config"),
            cwd=self.tree,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        timer = threading.Timer(150, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        took = time.monotonic() - began
        code = os.waitstatus_to_exitcode(status)
        self.results["check-config, alias bomb of 9**7 values"] = (
            f"{took:.1f} s, {usage.ru_maxrss / 1024:.0f} MB, exit {code}"
        )

    def healthz_under_slow_sockets(self, demo: DemoSource, clients: int) -> None:
        port = free_port()
        data = daemon_config(
            self.dsn, demo, port, entities=["user"], initial_from=datetime.now(UTC), every="1h"
        )
        with self.daemon(data, port, f"slow{clients}"):
            sockets: list[socket.socket] = []
            for _ in range(clients):
                with contextlib.suppress(OSError):
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    sockets.append(sock)
            ok = 0
            for poll in range(40):
                with contextlib.suppress(OSError):
                    if http_call(port, "GET", "/healthz").status == 200:
                        ok += 1
                time.sleep(0.25)
                if poll % 4 == 0:
                    for sock in sockets:
                        with contextlib.suppress(OSError):
                            sock.sendall(b"a")
            for sock in sockets:
                sock.close()
        self.results[f"/healthz with {clients} slow sockets"] = f"{ok} of 40 polls answered 200"

    def header_abuse(self, demo: DemoSource) -> None:
        port = free_port()
        data = daemon_config(
            self.dsn, demo, port, entities=["user"], initial_from=datetime.now(UTC), every="1h"
        )
        with self.daemon(data, port, "headers") as (proc, _, _):
            before = rss_kb(proc.pid)
            head = b"GET /healthz HTTP/1.1\r\n" + b"".join(
                b"X-H%d: %s\r\n" % (i, b"a" * 65_000) for i in range(99)
            )

            def abuse() -> None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
                ):
                    sock.sendall(head + b"\r\n")
                    while sock.recv(65536):
                        pass

            threads = [threading.Thread(target=abuse) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            time.sleep(1)
            peak, after = rss_kb(proc.pid, "VmHWM"), rss_kb(proc.pid)
        self.results["RSS, 16 requests of 99 headers x 65 KB"] = (
            f"{before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB, {after / 1024:.0f} MB after"
        )

    def sigterm_with_a_trickling_source(self, demo: DemoSource) -> None:
        body = json.dumps([{"TaskId": i, "ModifiedOn": "2026-12-07T10:00:00Z"} for i in range(50)])
        with hostile_source(lambda query: Reply(body.encode(), drip=2.0)) as source:
            port = free_port()
            data = daemon_config(
                self.dsn,
                demo,
                port,
                entities=["task"],
                initial_from=datetime.now(UTC) - timedelta(hours=1),
            )
            data["entities"]["task"]["url"] = source.url
            data["source"]["timeout"] = "5s"
            data["source"]["retries"] = {"attempts": 2, "backoff": "100ms"}  # ends by 10.2 s
            with self.daemon(data, port, "trickle") as (proc, _, _):
                time.sleep(15)
                running = query(
                    self.dsn,
                    "SELECT count(*) FROM sync_time WHERE entity = 'task' AND status = 'running' "
                    "AND started_at < now() - interval '11 seconds'",
                )[0][0]
                began = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(120)
                except subprocess.TimeoutExpired:
                    code = None
                took = time.monotonic() - began
            left = query(
                self.dsn,
                "SELECT count(*) FROM sync_time WHERE entity = 'task' AND status = 'running'",
            )[0][0]
        self.results["trickling source (1 byte / 2 s, timeout 5s)"] = (
            f"{running} run(s) still running after 15 s; SIGTERM took {took:.1f} s "
            f"(exit {code}), {left} run(s) left running"
        )

    def hostile_reload(self, demo: DemoSource) -> None:
        port = free_port()
        data = daemon_config(
            self.dsn, demo, port, entities=["user"], initial_from=datetime.now(UTC), every="1h"
        )
        with self.daemon(data, port, "reload") as (proc, _, config):
            with config.open("a") as out:
                out.write("# stray \x1b\n")
            proc.send_signal(signal.SIGHUP)
            time.sleep(3)
            state = "alive" if proc.poll() is None else f"gone, exit {proc.returncode}"
        self.results["SIGHUP with an ESC byte in the file"] = state

    def poison_push(self, demo: DemoSource) -> None:
        port = free_port()
        key = self.folder / "ingest-api-key"
        key.write_text("k3y\n")
        data = daemon_config(
            self.dsn, demo, port, entities=["task"], initial_from=datetime.now(UTC), every="1h"
        )
        data["http"]["api_key_file"] = str(key)
        body = (
            b'[{"TaskId":1,"Priority":"1\\u0000","ModifiedOn":"2026-12-07T10:00:00Z"},'
            b'{"TaskId":2,"Title":"ok","ModifiedOn":"2026-12-07T10:00:00Z"}]'
        )
        with self.daemon(data, port, "poison"):
            reply = http_call(port, "POST", "/v1/ingest/task", body, {"X-API-KEY": "k3y"})
        self.results["push of a poison record and a clean one"] = f"{reply.status} {reply.text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the syncd checkout to run")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="syncd-probe-"))
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="syncd-probe-pg-")))
    try:
        cluster.start()
        dsn = cluster.create_database("probe")
        probe = Probe(args.tree.resolve(), folder, dsn)
        now = datetime.now(UTC)
        with DemoSource(
            counts={"task": 0, "inspection": 0, "user": 10, "entity": 0},
            start=now - timedelta(days=1),
            end=now - timedelta(hours=2),
        ) as demo:
            probe.alias_bomb()
            probe.hostile_reload(demo)
            probe.poison_push(demo)
            probe.healthz_under_slow_sockets(demo, 16)
            probe.healthz_under_slow_sockets(demo, 200)
            probe.header_abuse(demo)
            probe.sigterm_with_a_trickling_source(demo)
        for name, result in probe.results.items():
            print(f"{name}: {result}")
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(cluster.datadir, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
