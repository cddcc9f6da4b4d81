"""Preload benchmark: `make bench-preload` (`python -m bench.preload`). Never in CI.

The same setting as `make bench` (bench/endtoend.py: a throwaway cluster set up like the
test suite's, the demo source in its own process with 200,000 tasks over two years),
then `syncd -c FILE preload task` as a subprocess: the configured preload from the
first record's month to E in monthly chunks, pages of 1000. Reports records/s, the
process's peak RSS (VmHWM, polled) and the chunk count. A preload must keep memory
flat whatever the chunk size, so it is run twice: monthly chunks, then one chunk of
a whole year per run (`1y`) into a fresh database.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path

from bench.endtoend import (
    ENTITY,
    PAGE_SIZE,
    TASKS,
    TIME_FORMAT,
    Setup,
    on_sigterm,
    pg,
    scalar,
    set_up,
    spawn,
    step,
    syncd_command,
    wait_measuring,
)
from devtools.demo_config import demo_config, dump
from devtools.devcluster import free_port


def write_preload_config(setup: Setup, dsn: str, chunk: str, name: str) -> Path:
    data = demo_config(dsn, setup.base_url, entities=[ENTITY], listen=f"127.0.0.1:{free_port()}")
    entity = data["entities"][ENTITY]
    del entity["window"]["initial_from"]
    # From the first day of the data's month: chunks are aligned calendar months.
    entity["preload"] = {"from": setup.data_start.strftime(TIME_FORMAT), "chunk": chunk}
    data["source"]["page_size"] = PAGE_SIZE
    path = setup.workdir / name
    path.write_text(dump(data))
    return path


def run_preload(stack: contextlib.ExitStack, setup: Setup, chunk: str) -> None:
    dsn = setup.cluster.create_database(f"preload_{chunk}")
    config = write_preload_config(setup, dsn, chunk, f"preload-{chunk}.yaml")
    log_path = setup.workdir / f"preload-{chunk}.log"
    step(f"syncd preload {ENTITY} --chunk {chunk}")
    started = time.perf_counter()
    proc = spawn(stack, [*syncd_command(), "-c", str(config), "preload", ENTITY], log_path)
    code, peak_kib, usage = wait_measuring(proc)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"syncd preload exited with {code}: {log_path.read_text()[-2000:]}")
    with pg(dsn) as conn:
        rows = int(scalar(conn, "SELECT count(*) FROM task_details"))
        chunks = int(
            scalar(conn, "SELECT count(*) FROM sync_time WHERE kind = 'preload' AND status = 'ok'")
        )
    print(f"\n== preload, chunk {chunk} ==")
    print(f"  rows in the table        {rows:,} (source: {TASKS:,})")
    print(f"  chunks                   {chunks}")
    print(f"  wall time                {seconds:.1f} s")
    print(f"  records/s                {rows / seconds:,.0f}")
    print(f"  peak RSS                 {peak_kib / 1024:.1f} MB (target < 80 MB)")
    print(f"  CPU, syncd               {usage.ru_utime + usage.ru_stime:.1f} s")


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with contextlib.ExitStack() as stack:
            setup = set_up(stack, TASKS)
            for chunk in ("1mo", "1y"):
                run_preload(stack, setup, chunk)
    except KeyboardInterrupt:
        step("interrupted; everything cleaned up")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
