"""`make run`: syncd against an embedded default, in the foreground.

Starts (or reuses) a private PostgreSQL cluster under ./var/pg, the demo source as a
subprocess, writes ./var/syncd.yaml pointing at both, then runs the daemon (`syncd
run`) in the foreground, printing where to look. Ctrl-C stops everything it started;
the data stays in ./var for next time (`make clean` removes it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools.demo_config import demo_config, dump
from devtools.devcluster import Cluster, free_port
from syncd import logs
from syncd.metrics import disable_created_series
from syncd.service.daemon import Daemon

VAR = Path("var")
DEMO_PORT = 54324
HTTP_PORT = 9188


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _start_demo_source(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.demo_source", "--port", str(port), "--churn", "5"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return process  # it answers (404 for /): ready
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the demo source did not start") from None
            time.sleep(0.2)
        else:
            return process
    process.terminate()
    raise SystemExit("the demo source did not answer within 30 s")


def main() -> int:
    logs.configure()
    VAR.mkdir(exist_ok=True)
    cluster = Cluster((VAR / "pg").resolve(), tuned_for_tests=False)
    cluster.start()
    demo_port = DEMO_PORT if _port_free(DEMO_PORT) else free_port()
    http_port = HTTP_PORT if _port_free(HTTP_PORT) else free_port()
    demo = _start_demo_source(demo_port)
    try:
        config_path = VAR / "syncd.yaml"
        data = demo_config(
            cluster.ensure_database("syncd"),
            f"http://127.0.0.1:{demo_port}",
            initial_from=time.strftime("%Y-%m-%d 00:00:00", time.gmtime(time.time() - 40 * 86400)),
            listen=f"127.0.0.1:{http_port}",
        )
        config_path.write_text(dump(data))
        here = os.path.relpath(config_path)
        print(
            f"\nsyncd demo: PostgreSQL {cluster.dsn('syncd')}, demo source on port {demo_port}\n"
            f"  metrics:  http://127.0.0.1:{http_port}/metrics\n"
            f"  status:   http://127.0.0.1:{http_port}/status\n"
            f"            .venv/bin/syncd -c {here} status\n"
            f"  psql:     psql {cluster.dsn('syncd')} -c 'select count(*) from task_details'\n"
            "  Ctrl-C stops it all; the data stays in ./var\n",
            flush=True,
        )
        disable_created_series()  # as `syncd run` does: process-wide, so here, not in Daemon
        return Daemon(str(config_path)).run()
    finally:
        demo.terminate()
        demo.wait(timeout=10)
        cluster.stop()
        print("stopped: syncd, the demo source and PostgreSQL (data kept in ./var)")


if __name__ == "__main__":
    sys.exit(main())
