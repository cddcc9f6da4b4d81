"""The text of the daemon's `STATUS=` line: what `systemctl status syncd` shows.

Short on purpose (systemd.status_line cuts it at 200 characters): how many entities,
how many running, the preload under way, and which entities' last run failed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from syncd.sync.results import RunOutcome, RunResult


def status_summary(
    prefix: str,
    entities: int,
    running: Collection[str],
    preloading: str | None,
    last_results: Mapping[str, RunResult],
) -> str:
    """E.g. "ready: 4 entities, 1 running, preloading task, failing: user"."""
    failed = sorted(n for n, r in last_results.items() if r.outcome == RunOutcome.FAILED)
    parts = [f"{prefix}: {entities} entities", f"{len(running)} running"]
    if preloading:
        parts.append(f"preloading {preloading}")
    if failed:
        parts.append(f"failing: {', '.join(failed)}")
    return ", ".join(parts)
