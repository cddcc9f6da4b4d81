"""Scale benchmark: `make bench-scale` (`python -m bench.scale`). Never run in CI.

N entities (default 1000) on the demo source, K `syncd run` instances (default 2) on
one throwaway PostgreSQL, every entity on `every: 1m`, for M minutes. The entities
are copies of the demo's `user` entity, each with its own table, all reading the
same endpoint while the source churns, so every run has a little to write.

Printed at the end:

- per instance: peak RSS, CPU seconds per run it did, peak database connections,
  the peak of `syncd_schedule_lag_seconds`;
- per entity, over the measured minutes (the first interval is left out: every
  instance starts every entity at once): runs per minute, the worst gap between two
  run starts, turns served twice (two starts closer than the interval less its
  slack: must be 0) and turns missed (a gap of two intervals or more counts one per
  interval missed: must be 0).

`--source-latency S` makes every source request wait S seconds, as a remote API's
would: runs then wait more than they compute, an instance is limited by its
`max_concurrent` slots rather than by the CPU, and adding an instance shows how the
shared schedule spreads the entities over the instances.

Memory per entity is the slope of peak RSS between two runs with different N (run
it twice and compare; the closing notes of the issues keep the figures).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2

from bench.endtoend import make_tempdir, spawn, start_cluster, wait_until_answers
from devtools.demo_config import DEMO_ENTITIES, demo_config, dump
from devtools.devcluster import free_port
from syncd.db.schedule_state import slack

TEMPLATE = "user"  # the demo entity every benchmark entity copies
RECORDS = 200  # records of the template in the source
CHURN = 20.0  # source changes per second
SAMPLE_EVERY = 1.0  # seconds between two looks at the processes


@dataclass
class Instance:
    name: str
    port: int
    proc: Any
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    peak_connections: int = 0
    peak_lag: float = 0.0
    connections_now: set[int] = field(default_factory=set)


def entity_config(base: dict[str, Any], index: int) -> tuple[str, dict[str, Any]]:
    name = f"{TEMPLATE}_{index:04d}"
    entity = dict(base)
    entity["table"] = f"{DEMO_ENTITIES[TEMPLATE]['table']}_{index:04d}"
    return name, entity


def write_config(
    workdir: Path, dsn: str, base_url: str, port: int, entities: int, every: str, slots: int
) -> Path:
    since = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    data = demo_config(
        dsn, base_url, entities=[TEMPLATE], initial_from=since, listen=f"127.0.0.1:{port}"
    )
    template = data["entities"].pop(TEMPLATE)
    template["schedule"] = {"every": every}
    template["window"]["max"] = "7d"
    data["scheduler"]["max_concurrent"] = slots
    data["entities"] = dict(entity_config(template, i) for i in range(entities))
    path = workdir / f"syncd-{port}.yaml"
    path.write_text(dump(data))
    return path


# --- looking at the processes ---------------------------------------------------------------


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(int(target[8:-1]))
    return found


def database_sockets(pg_port: int) -> set[int]:
    """Inodes of the TCP sockets connected to PostgreSQL's port (client side)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                remote_port = int(parts[2].rsplit(":", 1)[1], 16)
                if remote_port == pg_port and parts[3] == "01":  # ESTABLISHED
                    inodes.add(int(parts[9]))
    return inodes


def schedule_lag(port: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("syncd_schedule_lag_seconds "):
                    return float(line.split()[1])
    return 0.0


def sample(instances: Sequence[Instance], pg_port: int) -> None:
    to_database = database_sockets(pg_port)
    for instance in instances:
        pid = instance.proc.pid
        instance.peak_rss_mb = max(instance.peak_rss_mb, rss_mb(pid))
        instance.cpu_seconds = max(instance.cpu_seconds, cpu_seconds(pid))
        connections = len(socket_inodes(pid) & to_database)
        instance.peak_connections = max(instance.peak_connections, connections)
        instance.peak_lag = max(instance.peak_lag, schedule_lag(instance.port))


# --- what the database says ---------------------------------------------------------------


@dataclass
class EntityFigures:
    runs_per_minute: float
    worst_gap: float
    served_twice: int
    missed: int


def figures(dsn: str, since: datetime, until: datetime, interval: float) -> list[EntityFigures]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT entity, array_agg(started_at ORDER BY started_at) FROM sync_time"
            " WHERE kind = 'incremental' AND started_at BETWEEN %s AND %s GROUP BY entity",
            (since, until),
        )
        rows = cur.fetchall()
    minutes = (until - since).total_seconds() / 60
    close = interval - slack(interval) - 0.5  # a start this close to the previous: twice
    result = []
    for _, starts in rows:
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        result.append(
            EntityFigures(
                runs_per_minute=len(starts) / minutes,
                worst_gap=max(gaps, default=0.0),
                served_twice=sum(1 for gap in gaps if gap < close),
                missed=sum(max(0, int(gap // interval) - 1) for gap in gaps if gap >= 2 * interval),
            )
        )
    return result


def run_counts(dsn: str, since: datetime) -> dict[int, int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid, count(*) FROM sync_time WHERE kind = 'incremental' AND started_at > %s"
            " GROUP BY pid",
            (since,),
        )
        return dict(cur.fetchall())


def database_now(dsn: str) -> datetime:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT now()")
        row = cur.fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


# --- the run -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description="syncd with many entities and instances."
    )
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--every", default="1m")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--max-concurrent", type=int, default=4)
    parser.add_argument(
        "--source-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds each source request waits, as a remote API's would (default 0)",
    )
    args = parser.parse_args(argv)
    interval = {"s": 1, "m": 60}[args.every[-1]] * float(args.every[:-1])

    with contextlib.ExitStack() as stack:
        workdir = make_tempdir(stack, "syncd-scale-")
        print(
            f"PostgreSQL, the demo source ({RECORDS} {TEMPLATE} records, churn {CHURN}/s,"
            f" {args.source_latency:g} s latency)"
        )
        cluster = start_cluster(stack)
        dsn = cluster.create_database("scale")
        source_port = free_port()
        argv_source = [sys.executable, "-m", "devtools.demo_source", "--port", str(source_port)]
        argv_source += ["--user", str(RECORDS), "--span-days", "1", "--churn", str(CHURN)]
        argv_source += ["--latency", str(args.source_latency)]
        source = spawn(stack, argv_source, workdir / "demo.log")
        wait_until_answers(
            f"http://127.0.0.1:{source_port}{DEMO_ENTITIES[TEMPLATE]['path']}"
            "?fromTime=2000-01-01&toTime=2000-01-02&limit=1",
            source,
            workdir / "demo.log",
        )
        base_url = f"http://127.0.0.1:{source_port}"
        instances = []
        print(
            f"{args.instances} instances, {args.entities} entities on every: {args.every},"
            f" max_concurrent {args.max_concurrent}, {args.minutes} minutes"
        )
        for index in range(args.instances):
            port = free_port()
            config = write_config(
                workdir, dsn, base_url, port, args.entities, args.every, args.max_concurrent
            )
            proc = spawn(
                stack,
                [sys.executable, "-m", "syncd", "-c", str(config), "run"],
                workdir / f"syncd-{index}.log",
            )
            instances.append(Instance(chr(ord("a") + index), port, proc))
        pg_port = urlsplit(dsn).port or 5432
        started = database_now(dsn)
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            for instance in instances:
                if instance.proc.poll() is not None:
                    print(f"instance {instance.name} exited: see {workdir}", file=sys.stderr)
                    return 1
            sample(instances, pg_port)
            time.sleep(SAMPLE_EVERY)
        until = database_now(dsn)
        measured_from = started + timedelta(seconds=interval)
        per_entity = figures(dsn, measured_from, until, interval)
        counts = run_counts(dsn, started)

    print()
    print("instance  peak RSS  CPU s/run  runs   peak DB connections  peak schedule lag")
    for instance in instances:
        done = counts.get(instance.proc.pid, 0)
        per_run = instance.cpu_seconds / done if done else float("nan")
        print(
            f"{instance.name:<9} {instance.peak_rss_mb:6.1f} MB  {per_run * 1000:6.1f} ms"
            f"  {done:5d}  {instance.peak_connections:19d}  {instance.peak_lag:15.1f} s"
        )
    if not per_entity:
        print("no runs in the measured minutes")
        return 1
    rates = [f.runs_per_minute for f in per_entity]
    print()
    print(f"entities that ran: {len(per_entity)} of {args.entities}")
    print(
        f"runs per minute per entity: min {min(rates):.2f}, median {statistics.median(rates):.2f},"
        f" max {max(rates):.2f} (one per {interval:g} s is {60 / interval:.2f})"
    )
    print(f"worst gap between two starts: {max(f.worst_gap for f in per_entity):.1f} s")
    print(f"turns served twice: {sum(f.served_twice for f in per_entity)}")
    print(f"turns missed: {sum(f.missed for f in per_entity)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
