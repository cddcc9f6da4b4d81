"""What the commands that run syncs (`sync`, `preload`) share: checking the entity
names given, bringing the schema up to date first, and metrics of their own."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from syncd.config.model import Config
from syncd.db.connection import connect
from syncd.db.schema import migrate
from syncd.errors import UsageError
from syncd.metrics import Metrics


def check_entities(config: Config, names: Sequence[str]) -> list[str]:
    """`names`, or every entity when none is given; UsageError for an unknown one."""
    unknown = [name for name in names if name not in config.entities]
    if unknown:
        raise UsageError(
            f"unknown entity {', '.join(repr(n) for n in unknown)}; "
            f"configured: {', '.join(config.entities)}"
        )
    return list(names) or list(config.entities)


def migrate_first(config: Config) -> None:
    """Create missing tables and columns before a run by hand, as the daemon does."""
    conn = connect(config.database)
    try:
        migrate(conn, config)
    finally:
        conn.close()


def command_metrics(config: Config) -> Metrics:
    """Metrics for one command's runs: a registry of its own, nothing served."""
    metrics = Metrics(CollectorRegistry())
    metrics.declare(config.entities)
    return metrics
