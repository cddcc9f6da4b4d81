"""`make bench` keeps working as syncd changes: a small run, checked for its report,
never for its figures (benchmarks are not timed tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_end_to_end_on_a_small_data_set() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.endtoend", "--tasks", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rows rewritten by the second pass      0 (target 0) OK" in done.stdout
    assert "rows locked by the COPY path           0 (target 0) OK" in done.stdout
