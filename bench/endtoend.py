"""End-to-end benchmark of syncd: `make bench` (`python -m bench.endtoend`). Never run in CI.

Everything runs on this machine, in throwaway places that are removed at the end (also
on failure, Ctrl-C or SIGTERM): a PostgreSQL cluster set up like the test suite's, the
demo source in its own process serving 200,000 tasks spread over two years, and syncd.

What is measured, and why:

1. **End to end** -- `syncd -c FILE sync task` as a subprocess, the whole data set in
   ONE window (`window.max` 1000d), pages of 1000: wall time, rows fetched per second,
   and the process's peak RSS (VmHWM, polled; see `wait_measuring` for why not
   ru_maxrss). A pager that held a window in memory would show here: memory must
   stay flat whatever the window size.
2. **Second pass** over the same, unchanged data (watermark reset to the start): an
   incremental run re-reads its lookback on every run, so re-reading must be cheap
   and must rewrite nothing. Checked with `pg_stat_user_tables.n_tup_upd` and with
   every row's `xmin`. Shown too: the WAL the pass wrote, and how many rows it left
   row-locked (`xmax` set): `ON CONFLICT DO UPDATE ... WHERE` locks a row even when
   the WHERE then skips it, so the COPY path leaves unchanged rows out before that
   and must lock none (execute_values, for small batches, still locks them).
3. **The ceiling** -- the same rows, fetched, converted and formatted untimed, then
   COPY into a staging table + `INSERT ... SELECT ... ON CONFLICT DO UPDATE` in one
   transaction (bench/ceiling.py), best of 3: the database's own upsert speed
   here. The end-to-end rate is reported as a share of it.
4. **Where the time goes** -- the sync once more in-process into a fresh database,
   with timers around fetch (HTTP + gunzip, JSON decode), the paging anchors, convert
   (RowBuilder.build), upsert (EntityStore.upsert, and inside it each step of the
   COPY path: formatting, COPY, INSERT ... SELECT; the savepoint with the staging table;
   execute_values for small batches) and commit, and around the hand-over between
   the fetcher thread and the writer: whichever side waits on the other is not the
   bottleneck. `--cprofile` adds a cProfile of both threads (slower; distorts the
   timers).
5. **execute_values vs COPY** at batch sizes 100, 1000 and 5000 on the same rows:
   syncd's own two paths behind `EntityStore.upsert`, each forced for every batch by
   setting `syncd.db.store.COPY_MIN_ROWS`, to check where its threshold should lie.
6. **The source side alone**, nothing stored, in this process: the pages fetched and
   decoded through the drift-safe pager (the source drain), then the same with the
   rows built and prepared (the read side). Set against the end-to-end rate, they
   say which side limits it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast
from unittest import mock

import psycopg2
import psycopg2.extensions
import urllib3
from prometheus_client import CollectorRegistry
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

import syncd.db.store
import syncd.sync.paging
import syncd.sync.span_writer
from bench.ceiling import (
    Ceiling,
    Comparison,
    TimedConnection,
    compare_batch_sizes,
    measure_ceiling,
    process_cpu_seconds,
    timed_connect,
)
from devtools.demo_config import demo_config, dump
from devtools.devcluster import Cluster, free_port
from syncd import logs
from syncd.config.loader import load_config
from syncd.config.model import Config, Entity
from syncd.db.copytext import CopyFormatter
from syncd.db.rows import Reject, Row
from syncd.db.schema import entity_columns, migrate
from syncd.db.store import STATEMENT_ROWS, EntityStore, Prepared, Upserted
from syncd.errors import SyncdError
from syncd.metrics import Metrics
from syncd.sync.incremental import Engine
from syncd.sync.paging import WindowReader, overlap_for
from syncd.sync.prefetch import Prefetched
from syncd.sync.records import RowBuilder
from syncd.sync.source import SourceClient

TASKS = 200_000
PAGE_SIZE = 1000
SPAN_DAYS = 730
WINDOW_MAX = "1000d"  # longer than the span: the whole data set is one window
BATCH_SIZES = (100, 1000, 5000)
# Small reference sets, so that the tasks' AssigneeId/EntityId/InspectionId are filled.
OTHER_COUNTS = {"inspection": 300, "user": 50, "entity": 20}

TARGET_RATIO = 0.15
TARGET_RSS_MB = 80.0

ENTITY = "task"
SYNCD_APP = "syncd"  # application_name of syncd's connections (syncd.db.connection)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 900
POLL_S = 0.02  # VmHWM polling interval

T = TypeVar("T")


# --- small helpers -----------------------------------------------------------------------

_T0 = time.monotonic()


def step(message: str) -> None:
    """Progress on stderr; the report goes to stdout."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "-"


@contextlib.contextmanager
def pg(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection of the benchmark's own (not counted as syncd's)."""
    conn = psycopg2.connect(dsn, application_name="syncd-bench")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


Query = str | sql.Composable


def scalar(conn: psycopg2.extensions.connection, query: Query, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    return None if row is None else row[0]


# --- the setup: temp dirs, PostgreSQL, the demo source --------------------------------------


@dataclass
class Setup:
    workdir: Path
    cluster: Cluster
    dsn: str
    base_url: str
    source_pid: int
    data_start: datetime  # no record of the demo source is older


def make_tempdir(stack: contextlib.ExitStack, prefix: str) -> Path:
    # Straight under the temp dir, as tests/pg_fixtures.py does: as root, the cluster
    # runs as `postgres`, which must be able to reach its data directory.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


def start_cluster(stack: contextlib.ExitStack) -> Cluster:
    cluster = Cluster(make_tempdir(stack, "syncd-bench-pg-"), tuned_for_tests=True)
    stack.callback(cluster.stop, "immediate")
    cluster.start()
    return cluster


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn(
    stack: contextlib.ExitStack, argv: Sequence[str], log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_process, proc)
    return proc


def wait_until_answers(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    http = urllib3.PoolManager(retries=False)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the demo source exited with {proc.returncode}: {tail}")
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            if http.request("GET", url, timeout=2.0).status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the demo source did not answer within {START_TIMEOUT_S}s")


def start_demo_source(
    stack: contextlib.ExitStack, workdir: Path, port: int, tasks: int
) -> subprocess.Popen[bytes]:
    counts = {ENTITY: tasks, **OTHER_COUNTS}
    argv = [sys.executable, "-m", "devtools.demo_source", "--port", str(port)]
    argv += [arg for name, n in counts.items() for arg in (f"--{name}", str(n))]
    argv += ["--span-days", str(SPAN_DAYS)]
    log_path = workdir / "demo-source.log"
    proc = spawn(stack, argv, log_path)
    probe = f"http://127.0.0.1:{port}/api/task?fromTime=2000-01-01&toTime=2000-01-02&limit=1"
    wait_until_answers(probe, proc, log_path)
    return proc


def set_up(stack: contextlib.ExitStack, tasks: int) -> Setup:
    workdir = make_tempdir(stack, "syncd-bench-")
    step("starting PostgreSQL")
    cluster = start_cluster(stack)
    dsn = cluster.create_database("bench")
    step(f"starting the demo source ({tasks:,} tasks over {SPAN_DAYS} days)")
    # The source spreads its records over [its now - span, its now]: start below that.
    data_start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=SPAN_DAYS)
    port = free_port()
    source = start_demo_source(stack, workdir, port, tasks)
    return Setup(workdir, cluster, dsn, f"http://127.0.0.1:{port}", source.pid, data_start)


def write_config(setup: Setup, dsn: str, name: str) -> Path:
    data = demo_config(
        dsn,
        setup.base_url,
        entities=[ENTITY],
        initial_from=setup.data_start.strftime(TIME_FORMAT),
        listen=f"127.0.0.1:{free_port()}",
    )
    data["source"]["page_size"] = PAGE_SIZE
    data["entities"][ENTITY]["window"]["max"] = WINDOW_MAX
    path = setup.workdir / name
    path.write_text(dump(data))
    return path


# --- syncd as a subprocess ---------------------------------------------------------------


@dataclass(frozen=True)
class SyncdRun:
    seconds: float  # wall time of the process
    peak_rss_mb: float  # VmHWM
    wal_bytes: int  # written by the whole cluster during the run
    cpu_seconds: float  # of the syncd process
    source_cpu_seconds: float  # of the demo source during the run
    rows_fetched: int
    rows_written: int
    run_seconds: float  # the run as sync_time records it (no start-up, no migrate)


def syncd_command() -> list[str]:
    script = Path(sys.executable).with_name("syncd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "syncd"]


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the high-water mark of the process's resident memory, in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for text in status.splitlines():
        if text.startswith("VmHWM:"):
            return int(text.split()[1])
    return 0  # a zombie has no memory left to report


def wait_measuring(proc: subprocess.Popen[bytes]) -> tuple[int, int, Any]:
    """Wait for `proc`, polling its VmHWM; returns exit status, peak RSS (KiB), rusage.

    Not `ru_maxrss`: at exec the kernel folds the RSS high-water mark of the process
    image being replaced -- a copy of *this* process -- into the child's, so wait4 and
    RUSAGE_CHILDREN report at least the benchmark's own peak. VmHWM belongs to the
    exec'd image alone. wait4 still gives that child's CPU times."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    peak = 0
    while time.monotonic() < deadline:
        peak = max(peak, peak_rss_kib(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, peak, usage
        time.sleep(POLL_S)
    raise RuntimeError(f"syncd did not finish within {RUN_TIMEOUT_S}s")


def wal_lsn(dsn: str) -> str:
    with pg(dsn) as conn:
        return str(scalar(conn, "SELECT pg_current_wal_lsn()"))


def wal_since(dsn: str, lsn: str) -> int:
    with pg(dsn) as conn:
        return int(scalar(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)))


def last_run(dsn: str) -> tuple[int, int, float]:
    """rows_fetched, rows_written and duration of the entity's latest sync_time row."""
    with pg(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rows_fetched, rows_written, "
            "extract(epoch FROM finished_at - started_at)::float8 "
            "FROM sync_time WHERE entity = %s ORDER BY id DESC LIMIT 1",
            (ENTITY,),
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2])


def run_syncd(stack: contextlib.ExitStack, setup: Setup, config: Path, name: str) -> SyncdRun:
    log_path = setup.workdir / f"{name}.log"
    source_cpu = process_cpu_seconds(setup.source_pid)
    lsn = wal_lsn(setup.dsn)
    started = time.perf_counter()
    proc = spawn(stack, [*syncd_command(), "-c", str(config), "sync", ENTITY], log_path)
    code, peak_kib, usage = wait_measuring(proc)
    seconds = time.perf_counter() - started
    if code != 0:
        output = log_path.read_text(errors="replace")
        raise RuntimeError(f"syncd exited with {code}:\n{output[-3000:]}")
    fetched, written, run_seconds = last_run(setup.dsn)
    return SyncdRun(
        seconds=seconds,
        peak_rss_mb=peak_kib / 1024,
        wal_bytes=wal_since(setup.dsn, lsn),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        source_cpu_seconds=process_cpu_seconds(setup.source_pid) - source_cpu,
        rows_fetched=fetched,
        rows_written=written,
        run_seconds=run_seconds,
    )


# --- the second pass: nothing may be rewritten -----------------------------------------------


@dataclass(frozen=True)
class TableState:
    inserted: int
    updated: int
    locked: int  # rows whose xmax is set: deleted, updated or locked by a later transaction
    xmins: dict[Any, str]


def wait_for_syncd_backends_gone(conn: psycopg2.extensions.connection) -> None:
    """A backend flushes its table statistics as it exits: wait for syncd's to be gone."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    deadline = time.monotonic() + 10
    while scalar(conn, query, (SYNCD_APP,)) and time.monotonic() < deadline:
        time.sleep(0.05)


def table_state(dsn: str, entity: Entity) -> TableState:
    table, key = sql.Identifier(entity.table), sql.Identifier(entity.primary_key[0])
    with pg(dsn) as conn, conn.cursor() as cur:
        wait_for_syncd_backends_gone(conn)
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = %s",
            (entity.table,),
        )
        inserted, updated = cur.fetchone() or (0, 0)
        cur.execute(sql.SQL("SELECT {}, xmin::text FROM {}").format(key, table))
        xmins = dict(cur.fetchall())
        locked = scalar(conn, sql.SQL("SELECT count(*) FROM {} WHERE xmax <> '0'").format(table))
        return TableState(inserted, updated, locked, xmins)


@dataclass(frozen=True)
class SecondPass:
    run: SyncdRun
    upd_delta: int
    ins_delta: int
    xmin_changed: int
    rows_locked: int  # rows the pass left its xmax on without rewriting them
    small_batch_rows: int  # rows it sent through execute_values (see small_batch_rows)

    @property
    def rewritten(self) -> int:
        return max(self.upd_delta, self.xmin_changed, self.run.rows_written)

    @property
    def locked_by_copy(self) -> int:
        """Rows locked beyond those execute_values could have locked: the COPY path's."""
        return max(0, self.rows_locked - self.small_batch_rows)


def small_batch_rows(rows: int) -> int:
    """Rows of one window of `rows` records that reach EntityStore.upsert in a batch
    under COPY_MIN_ROWS, so through execute_values, whose ON CONFLICT ... WHERE locks
    the unchanged rows it skips. The source does not move: the first page brings
    PAGE_SIZE new records, each later one PAGE_SIZE - overlap; only the last is short."""
    last = rows if rows <= PAGE_SIZE else (rows - PAGE_SIZE) % (PAGE_SIZE - overlap_for(PAGE_SIZE))
    return last if last < syncd.db.store.COPY_MIN_ROWS else 0


def second_pass(
    stack: contextlib.ExitStack, setup: Setup, config: Path, entity: Entity
) -> SecondPass:
    before = table_state(setup.dsn, entity)
    with pg(setup.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE sync_state SET watermark = %s WHERE entity = %s", (setup.data_start, ENTITY)
        )
    run = run_syncd(stack, setup, config, "second-pass")
    after = table_state(setup.dsn, entity)
    changed = sum(1 for key, xmin in after.xmins.items() if before.xmins.get(key) != xmin)
    return SecondPass(
        run=run,
        upd_delta=after.updated - before.updated,
        ins_delta=after.inserted - before.inserted,
        xmin_changed=changed,
        rows_locked=after.locked - before.locked,
        small_batch_rows=small_batch_rows(len(after.xmins)),
    )


# --- the rows, fetched and converted untimed (for the ceiling and the comparison) -------------


def fetch_rows(config: Config) -> list[Row]:
    """Every record of the entity, page by page (the source does not change), as rows."""
    entity = config.entities[ENTITY]
    client = SourceClient()
    builder = RowBuilder(entity)
    assert entity.window.initial_from is not None
    from_text = entity.window.initial_from.strftime(TIME_FORMAT)
    to_text = datetime.now(UTC).strftime(TIME_FORMAT)
    rows: list[Row] = []
    offset = 0
    while True:
        page = client.fetch_page(entity, from_text, to_text, offset, PAGE_SIZE)
        for record in page:
            row = builder.build(record)
            if isinstance(row, Reject):
                raise RuntimeError(f"the demo source served a bad record: {row.reason}")
            rows.append(row)
        if len(page) < PAGE_SIZE:
            return rows
        offset += len(page)


@dataclass(frozen=True)
class Drain:
    """The source side alone, in this process, nothing stored: how fast the pages can
    be read (fetched, decoded, paged drift-safely), and how fast they can be made
    ready for the database (rows built, one per key, COPY text)."""

    records: int
    fetch_seconds: float  # fetch + decode + paging
    read_seconds: float  # the same, then rows built and prepared


def drain(config: Config) -> Drain:
    """Both figures of `Drain`, the best of two passes each."""
    entity = config.entities[ENTITY]
    client = SourceClient()
    builder = RowBuilder(entity)
    store = EntityStore(entity, config.database.schema)
    assert entity.window.initial_from is not None
    from_text = entity.window.initial_from.strftime(TIME_FORMAT)
    to_text = datetime.now(UTC).strftime(TIME_FORMAT)

    def one_pass(prepare: bool) -> tuple[int, float]:
        reader = WindowReader(
            lambda offset, limit: client.fetch_page(entity, from_text, to_text, offset, limit),
            entity.source.page_size,
        )
        records = 0
        started = time.perf_counter()
        for page in reader.batches(lambda: False):
            records += len(page)
            if prepare:
                pairs: list[tuple[Any, Row]] = []
                for record in page:
                    row = builder.build(record)
                    if not isinstance(row, Reject):
                        pairs.append((record, row))
                store.prepare(pairs)
        return records, time.perf_counter() - started

    fetched = [one_pass(prepare=False) for _ in range(2)]
    read = [one_pass(prepare=True) for _ in range(2)]
    return Drain(fetched[0][0], min(t for _, t in fetched), min(t for _, t in read))


def ceiling(dsn: str, entity: Entity, rows: list[Row]) -> Ceiling:
    text = CopyFormatter([col_type for _, col_type in entity_columns(entity)]).text(rows)  # untimed
    conn = psycopg2.connect(dsn, application_name="syncd-bench")
    try:
        return measure_ceiling(conn, entity, text, len(rows))
    finally:
        conn.close()


# --- where the time goes: one in-process run with timers ------------------------------------
#
# The engine runs unchanged; the timers come in as subclasses of what it builds
# (patched into syncd.sync.span_writer for the run), as wrappers of syncd.sync.paging's anchor
# functions, as a stand-in for the writer's cursor inside EntityStore.upsert, and by
# overriding some private methods (SourceClient._read, EntityStore._copy and
# _execute, Prefetched._put): `check_timers` fails the benchmark if one of them
# never fired, rather than report a silent zero.

EXPECTED_TIMERS = (
    *("fetch", "json", "anchors", "convert", "prepare", "fetcher blocked"),
    *("upsert", "savepoints", "copy path", "copy formatting", "COPY"),
    *("INSERT ... SELECT", "commit", "writer waiting"),
)


@dataclass
class Timers:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, name: str, started: float) -> None:
        self.seconds[name] += time.perf_counter() - started

    def timed(self, name: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.add(name, started)


class TimedClient(SourceClient):
    def __init__(self, timers: Timers) -> None:
        super().__init__()
        self.timers = timers

    def fetch_page(
        self, entity: Entity, from_text: str, to_text: str, offset: int, limit: int
    ) -> list[Any]:
        fetch = super().fetch_page
        return self.timers.timed("fetch", lambda: fetch(entity, from_text, to_text, offset, limit))

    def _decode(self, entity: Entity, body: bytearray) -> list[Any]:
        return self.timers.timed("json", lambda: super(TimedClient, self)._decode(entity, body))


class TimedRowBuilder(RowBuilder):
    def __init__(self, entity: Entity, *, timers: Timers) -> None:
        super().__init__(entity)
        self.timers = timers

    def build(self, record: Any) -> Row | Reject:
        started = time.perf_counter()  # no closure: this runs once per record
        row = super().build(record)
        self.timers.add("convert", started)
        return row


def timed_calls(timers: Timers, name: str, function: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timers.add(name, started)

    return timed


class TimedCopyFormatter(CopyFormatter):
    def __init__(self, column_types: Sequence[str], timers: Timers) -> None:
        super().__init__(column_types)
        self.timers = timers

    def text(self, rows: Sequence[Row]) -> bytes:
        started = time.perf_counter()
        text = super().text(rows)
        self.timers.add("copy formatting", started)
        return text


class StepCursor:
    """Stands in for the writer's cursor inside EntityStore.upsert: times each step
    by what it runs (the store's own statements are told apart by identity) and hands
    everything else to the cursor itself."""

    def __init__(self, cursor: Cursor, store: EntityStore, timers: Timers) -> None:
        self.cursor = cursor
        self.store = store
        self.timers = timers

    def _step(self, query: Any) -> str:
        if query is self.store.savepoint_and_staging:
            return "savepoints"
        if query is self.store.from_staging:
            return "INSERT ... SELECT"
        if isinstance(query, str) and query.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            return "savepoints"
        return "other statements"

    def execute(self, query: Any, vars: Any = None) -> None:
        started = time.perf_counter()
        try:
            self.cursor.execute(query, vars)
        finally:
            self.timers.add(self._step(query), started)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        started = time.perf_counter()
        try:
            self.cursor.copy_expert(sql, file, size)
        finally:
            self.timers.add("COPY", started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


class TimedStore(EntityStore):
    def __init__(self, entity: Entity, schema: str, *, timers: Timers) -> None:
        super().__init__(entity, schema)
        self.timers = timers
        self.formatter = TimedCopyFormatter([t for _, t in entity_columns(entity)], timers)

    def prepare(self, pairs: Sequence[tuple[Any, Row]]) -> Prepared:
        return self.timers.timed("prepare", lambda: super(TimedStore, self).prepare(pairs))

    def write(self, cur: Any, prepared: Prepared) -> Upserted:
        steps = cast(Cursor, StepCursor(cur, self, self.timers))
        return self.timers.timed("upsert", lambda: super(TimedStore, self).write(steps, prepared))

    def _copy(self, cur: Any, text: bytes) -> int:
        return self.timers.timed("copy path", lambda: super(TimedStore, self)._copy(cur, text))

    def _execute(self, cur: Any, rows: list[Row]) -> int:
        # execute_values needs the real cursor (it renders SQL against it).
        real = cur.cursor if isinstance(cur, StepCursor) else cur
        return self.timers.timed(
            "execute_values", lambda: super(TimedStore, self)._execute(real, rows)
        )


class TimedPrefetched(Prefetched[T]):
    """Times the hand-over: the fetcher blocked on a full queue (the writer is slower)
    and the writer waiting for a page (the fetcher is slower)."""

    def __init__(
        self, produce: Callable[[], Iterator[T]], *, name: str, timers: Timers, profile: bool
    ) -> None:
        self.timers = timers
        self.profile = cProfile.Profile() if profile else None
        super().__init__(produce, name=name)

    def _run(self) -> None:
        if self.profile is None:
            super()._run()
        else:
            self.profile.runcall(super()._run)

    def _put(self, item: Any) -> bool:
        return self.timers.timed("fetcher blocked", lambda: super(TimedPrefetched, self)._put(item))

    def __iter__(self) -> Iterator[T]:
        items = super().__iter__()
        while True:
            started = time.perf_counter()
            item = next(items, None)
            self.timers.add("writer waiting", started)
            if item is None:
                return
            yield item


class TimedEngine(Engine):
    def __init__(self, config: Config, timers: Timers) -> None:
        metrics = Metrics(CollectorRegistry())
        metrics.declare(config.entities)
        super().__init__(config, metrics, client=TimedClient(timers))
        self.connections: list[TimedConnection] = []

    def connect(self) -> psycopg2.extensions.connection:
        """syncd.db.connection.connect, with a connection that times statements and commits."""
        conn = timed_connect(self.config.database.dsn, "syncd-bench-inprocess")
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        conn.server_seconds = conn.commit_seconds = 0.0
        self.connections.append(conn)
        return conn


def check_timers(timers: Timers) -> None:
    silent = [name for name in EXPECTED_TIMERS if not timers.seconds.get(name)]
    if silent:
        raise RuntimeError(
            f"timers that never fired: {', '.join(silent)}; syncd's internals changed, "
            "update the Timed* classes in bench/endtoend.py"
        )


@dataclass
class Breakdown:
    rows: int
    wall: float
    process_cpu: float
    backend_cpu: float
    seconds: dict[str, float]
    profiles: list[tuple[str, cProfile.Profile]]


@contextlib.contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """syncd's structured logs into a file for the block (they would clutter the report)."""
    with path.open("w") as log_file:
        logs.configure(stream=log_file, json=True)
        try:
            yield
        finally:
            logs.configure(stream=sys.stderr)


@contextlib.contextmanager
def timed_engine_parts(
    timers: Timers, fetchers: list[TimedPrefetched[Any]], profile: bool
) -> Iterator[None]:
    """The engine builds Timed* parts instead of its own for the block; the fetcher
    threads it starts are appended to `fetchers` (with a cProfile if `profile`)."""

    def prefetched(produce: Callable[[], Iterator[Any]], name: str) -> TimedPrefetched[Any]:
        fetchers.append(TimedPrefetched(produce, name=name, timers=timers, profile=profile))
        return fetchers[-1]

    row_builder = functools.partial(TimedRowBuilder, timers=timers)
    store = functools.partial(TimedStore, timers=timers)
    find_anchor = timed_calls(timers, "anchors", syncd.sync.paging._find_anchor)
    anchors = timed_calls(timers, "anchors", syncd.sync.paging._anchors)
    with (
        mock.patch.object(syncd.sync.span_writer, "RowBuilder", row_builder),
        mock.patch.object(syncd.sync.span_writer, "EntityStore", store),
        mock.patch.object(syncd.sync.span_writer, "Prefetched", prefetched),
        mock.patch.object(syncd.sync.paging, "_find_anchor", find_anchor),
        mock.patch.object(syncd.sync.paging, "_anchors", anchors),
    ):
        yield


def run_in_process(setup: Setup, use_cprofile: bool) -> Breakdown:
    dsn = setup.cluster.create_database("bench_profile")
    config = load_config(write_config(setup, dsn, "profile.yaml"))
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        migrate(conn, config)
    timers = Timers()
    engine = TimedEngine(config, timers)
    writer_profile = cProfile.Profile() if use_cprofile else None
    fetchers: list[TimedPrefetched[Any]] = []
    cpu_before = time.process_time()
    started = time.perf_counter()
    with logs_to(setup.workdir / "profile.log"), timed_engine_parts(timers, fetchers, use_cprofile):
        if writer_profile is not None:
            result = writer_profile.runcall(engine.sync_entity, ENTITY)
        else:
            result = engine.sync_entity(ENTITY)
    wall = time.perf_counter() - started
    if result.outcome != "ok":
        raise RuntimeError(f"the in-process run failed: {result.error}")
    # The engine has closed its connections, each reading its backend's CPU time first.
    timers.seconds["commit"] = sum(conn.commit_seconds for conn in engine.connections)
    check_timers(timers)
    profiles = [("writer (main thread)", writer_profile)] if writer_profile else []
    profiles += [("fetcher thread", f.profile) for f in fetchers if f.profile is not None]
    return Breakdown(
        rows=result.fetched,
        wall=wall,
        process_cpu=time.process_time() - cpu_before,
        backend_cpu=sum(conn.backend_cpu_seconds for conn in engine.connections),
        seconds=dict(timers.seconds),
        profiles=profiles,
    )


# --- the report ----------------------------------------------------------------------------


def line(label: str, value: str) -> None:
    print(f"  {label:<38} {value}")


def wal(size: int, rows: int) -> str:
    return f"{size / 1e6:.1f} MB ({size / max(rows, 1):.0f} B/row)"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_first_pass(run: SyncdRun, rows_in_table: int, ratio: float) -> None:
    print("\n== 1. end to end: `syncd sync task` as a subprocess, all rows in one window ==")
    line("rows fetched", f"{run.rows_fetched:,} (in the table: {rows_in_table:,})")
    line("wall time", f"{run.seconds:.1f} s (the run as logged: {run.run_seconds:.1f} s)")
    line("records/s", rate(run.rows_fetched, run.seconds))
    line("share of the ceiling", f"{ratio:.1%} (target >= {TARGET_RATIO:.0%})")
    line("peak RSS", f"{run.peak_rss_mb:.1f} MB (target < {TARGET_RSS_MB:.0f} MB)")
    line("WAL written", wal(run.wal_bytes, run.rows_fetched))
    line("CPU, syncd", f"{run.cpu_seconds:.1f} s ({run.cpu_seconds / run.seconds:.0%} of a core)")
    line("CPU, demo source", f"{run.source_cpu_seconds:.1f} s")


def print_second_pass(second: SecondPass, rows: int) -> None:
    run = second.run
    print("\n== 2. second pass over the same, unchanged data (watermark reset) ==")
    line("rows fetched", f"{run.rows_fetched:,} in {run.seconds:.1f} s")
    line("records/s", rate(run.rows_fetched, run.seconds))
    line("rewritten rows", f"{second.rewritten} (target 0)")
    line("  n_tup_upd / n_tup_ins", f"+{second.upd_delta} / +{second.ins_delta}")
    line("  xmin changed", f"{second.xmin_changed} of {rows:,} rows")
    line("  sync_time.rows_written", str(run.rows_written))
    line("  rows locked (xmax set)", f"{second.rows_locked:,}")
    small = second.small_batch_rows
    line("    by execute_values, at most", f"{small:,} (a last batch under COPY_MIN_ROWS)")
    line("    by the COPY path", f"{second.locked_by_copy:,} (target 0)")
    line("WAL written", wal(run.wal_bytes, rows))
    line("peak RSS", f"{run.peak_rss_mb:.1f} MB")
    line("CPU, syncd", f"{run.cpu_seconds:.1f} s ({run.cpu_seconds / run.seconds:.0%} of a core)")


def print_drain(result: Drain) -> None:
    print("\n== 6. the source side alone, nothing stored (this process, one thread) ==")
    print("  (the best of 2 passes each: which side limits the end-to-end rate)")
    line("records", f"{result.records:,}")
    line("fetched and decoded (source drain)", rate(result.records, result.fetch_seconds))
    line("+ rows built and prepared (read side)", rate(result.records, result.read_seconds))


def print_ceiling(result: Ceiling) -> None:
    print("\n== 3. ceiling: COPY to TEMP staging + INSERT ... SELECT ... ON CONFLICT, one tx ==")
    print("  (the best of 3 tries, each into a fresh empty table)")
    line("rows", f"{result.rows:,}")
    line("COPY", f"{result.copy_seconds:.2f} s")
    line("INSERT ... SELECT ... ON CONFLICT", f"{result.upsert_seconds:.2f} s")
    line("total, commit included", f"{result.total_seconds:.2f} s")
    line("rows/s", rate(result.rows, result.total_seconds))


BREAKDOWN_LINES = (
    ("fetcher thread", ""),
    ("  fetch: HTTP request, gunzip", "http"),
    ("  fetch: JSON decode", "json"),
    ("  paging anchors (identity of records)", "anchors"),
    ("  convert (RowBuilder.build)", "convert"),
    ("  prepare (dedupe, COPY text)", "prepare"),
    ("    COPY text (CopyFormatter.text)", "copy formatting"),
    ("  other: batches, GIL waits", "fetcher other"),
    ("  blocked on a full queue", "fetcher blocked"),
    ("writer thread", ""),
    ("  upsert (EntityStore.write)", "upsert"),
    ("    COPY path (EntityStore._copy)", "copy path"),
    ("      COPY", "COPY"),
    ("      INSERT ... SELECT", "INSERT ... SELECT"),
    ("      other", "copy other"),
    ("    execute_values (small batches)", "execute_values"),
    ("    savepoint + staging table", "savepoints"),
    ("    other", "upsert other"),
    ("  commit", "commit"),
    ("  run log, other", "writer other"),
    ("  waiting for a page", "writer waiting"),
)


def derived(breakdown: Breakdown) -> dict[str, float]:
    """The timers, plus what is left of each thread's wall time and of each timer."""
    s: dict[str, float] = defaultdict(float, breakdown.seconds)
    s["http"] = s["fetch"] - s["json"]
    s["fetcher other"] = (
        breakdown.wall
        - s["fetch"]
        - s["anchors"]
        - s["convert"]
        - s["prepare"]
        - s["fetcher blocked"]
    )
    copy_steps = ("COPY", "INSERT ... SELECT")
    s["copy other"] = s["copy path"] - sum(s[name] for name in copy_steps)
    upsert_steps = ("copy path", "execute_values", "savepoints", "other statements")
    s["upsert other"] = s["upsert"] - sum(s[name] for name in upsert_steps)
    s["writer other"] = breakdown.wall - s["upsert"] - s["commit"] - s["writer waiting"]
    return s


def bottleneck(breakdown: Breakdown) -> str:
    """The side that never waits for the other."""
    s = derived(breakdown)
    return "the writer" if s["fetcher blocked"] > s["writer waiting"] else "the fetcher"


def print_breakdown(breakdown: Breakdown) -> None:
    s, wall = derived(breakdown), breakdown.wall
    print("\n== 4. where the time goes: in-process run into a fresh table, with timers ==")
    line("rows, wall time", f"{breakdown.rows:,} in {wall:.1f} s: {rate(breakdown.rows, wall)}")
    for label, key in BREAKDOWN_LINES:
        if key:
            line(label, f"{s[key]:6.2f} s {s[key] / wall:5.0%}")
        else:
            print(f"  {label}")
    cpu = breakdown.process_cpu
    line("CPU, syncd (both threads, one GIL)", f"{cpu:.1f} s ({cpu / wall:.0%} of a core)")
    line("CPU, its PostgreSQL backend", f"{breakdown.backend_cpu:.1f} s")
    line("bottleneck", bottleneck(breakdown))
    # What each side could do if the other never held it up (the GIL aside).
    fetcher_busy, writer_busy = wall - s["fetcher blocked"], wall - s["writer waiting"]
    line(
        "fetcher alone, at most",
        f"{rate(breakdown.rows, fetcher_busy)} (busy {fetcher_busy:.1f} s)",
    )
    line("writer alone, at most", f"{rate(breakdown.rows, writer_busy)} (busy {writer_busy:.1f} s)")
    for title, profile in breakdown.profiles:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(f"\n  cProfile of the {title}, top 15 by own time:")
        body = [text for text in out.getvalue().splitlines()[4:] if text.strip()]
        print("\n".join("    " + text for text in body))


def print_comparison(results: list[Comparison]) -> None:
    rows = results[0].rows
    print(f"\n== 5. execute_values vs COPY, fresh table, a commit per batch, {rows:,} rows ==")
    print("  both: EntityStore.upsert, with syncd.db.store.COPY_MIN_ROWS forced for the run")
    print(f"  execute_values: above every batch; statements of at most {STATEMENT_ROWS} rows")
    print("  COPY:           1; COPY into its TEMP staging table + one INSERT ... SELECT")
    print(f"  (syncd itself takes the COPY path from {syncd.db.store.COPY_MIN_ROWS} rows on)")
    print("  server: time inside statements, COPY and commits; Python: the rest")
    header = ("batch", "method", "rows/s", "server", "Python", "backend CPU", "vs ev")
    print("  {:>6}  {:<16} {:>8} {:>8} {:>8} {:>12} {:>6}".format(*header))
    baseline: dict[int, float] = {}
    for r in results:
        baseline.setdefault(r.batch_size, r.rows_per_second)
        print(
            f"  {r.batch_size:>6}  {r.method:<16} {r.rows_per_second:>8,.0f} "
            f"{r.server_seconds:>7.2f}s {r.seconds - r.server_seconds:>7.2f}s "
            f"{r.backend_cpu_seconds:>11.2f}s {r.rows_per_second / baseline[r.batch_size]:>5.1f}x"
        )


@dataclass(frozen=True)
class Results:
    first: SyncdRun
    rows_in_table: int
    second: SecondPass
    ceiling: Ceiling
    breakdown: Breakdown
    comparison: list[Comparison]
    drain: Drain

    @property
    def ratio(self) -> float:
        return (self.first.rows_fetched / self.first.seconds) / self.ceiling.rows_per_second


def print_report(results: Results) -> None:
    first, second = results.first, results.second
    print_first_pass(first, results.rows_in_table, results.ratio)
    print_second_pass(second, results.rows_in_table)
    print_ceiling(results.ceiling)
    print_breakdown(results.breakdown)
    print_comparison(results.comparison)
    print_drain(results.drain)
    print("\n== summary ==")
    line("records/s end to end", rate(first.rows_fetched, first.seconds))
    line("ceiling", rate(results.ceiling.rows, results.ceiling.total_seconds))
    line("source drain (fetch, decode)", rate(results.drain.records, results.drain.fetch_seconds))
    line("read side (+ rows, COPY text)", rate(results.drain.records, results.drain.read_seconds))
    ratio_ok = verdict(results.ratio >= TARGET_RATIO)
    line("share of the ceiling", f"{results.ratio:.1%} (target >= {TARGET_RATIO:.0%}) {ratio_ok}")
    rss_ok = verdict(first.peak_rss_mb < TARGET_RSS_MB)
    line("peak RSS", f"{first.peak_rss_mb:.1f} MB (target < {TARGET_RSS_MB:.0f} MB) {rss_ok}")
    line("second pass", rate(second.run.rows_fetched, second.run.seconds))
    rewrite_ok = verdict(second.rewritten == 0)
    line("rows rewritten by the second pass", f"{second.rewritten} (target 0) {rewrite_ok}")
    locked_ok = verdict(second.locked_by_copy == 0)
    line("rows locked by the COPY path", f"{second.locked_by_copy:,} (target 0) {locked_ok}")
    line("bottleneck", bottleneck(results.breakdown))


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.endtoend", description="The end-to-end benchmark of syncd."
    )
    parser.add_argument("--tasks", type=int, default=TASKS, help=f"records (default {TASKS})")
    parser.add_argument(
        "--compare-rows",
        type=int,
        default=0,
        metavar="N",
        help="rows for the execute_values/COPY comparison (default: all)",
    )
    parser.add_argument(
        "--cprofile", action="store_true", help="also cProfile both threads of the in-process run"
    )
    return parser.parse_args(argv)


def count_rows(dsn: str, table: str) -> int:
    with pg(dsn) as conn:
        return int(scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))


def benchmark(stack: contextlib.ExitStack, args: argparse.Namespace) -> Results:
    setup = set_up(stack, args.tasks)
    config_path = write_config(setup, setup.dsn, "syncd.yaml")
    entity = load_config(config_path).entities[ENTITY]
    step("1. syncd sync task (first pass)")
    first = run_syncd(stack, setup, config_path, "first-pass")
    rows_in_table = count_rows(setup.dsn, entity.table)
    if rows_in_table != args.tasks:
        raise RuntimeError(f"{entity.table} holds {rows_in_table} rows, expected {args.tasks}")
    step("2. syncd sync task again over the same data (second pass)")
    second = second_pass(stack, setup, config_path, entity)
    # Before the rows below exist: 200k live tuples would slow this process's GC.
    step("4. in-process run with timers" + (" and cProfile" if args.cprofile else ""))
    breakdown = run_in_process(setup, args.cprofile)
    step("3. fetching and converting the rows for the ceiling (untimed)")
    rows = fetch_rows(load_config(config_path))
    step("3. the ceiling")
    ceiling_ = ceiling(setup.dsn, entity, rows)
    step("5. execute_values vs COPY")
    compared = rows[: args.compare_rows] if args.compare_rows else rows
    comparison = compare_batch_sizes(setup.dsn, entity, compared, BATCH_SIZES)
    del rows, compared
    step("6. the source side alone")
    drained = drain(load_config(config_path))
    step("done; cleaning up")
    return Results(first, rows_in_table, second, ceiling_, breakdown, comparison, drained)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with contextlib.ExitStack() as stack:
            results = benchmark(stack, args)
    except KeyboardInterrupt:
        step("interrupted; everything cleaned up")
        return 130
    except (RuntimeError, SyncdError, psycopg2.Error, OSError) as exc:
        step(f"failed, everything cleaned up: {type(exc).__name__}: {exc}")
        return 1
    print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
