"""The `syncd` command line (its commands: README.md; running it: docs/operations.md).

Exit status: 0 success, 1 a sync run failed, 2 usage or configuration error.
Errors reach stderr as one readable line each; a traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg2

from syncd import __version__, logs
from syncd.cli.common import check_entities, command_metrics, migrate_first
from syncd.cli.preload import run_preload
from syncd.config.loader import default_config_path, load_config
from syncd.config.model import Config
from syncd.config.values import parse_timestamp
from syncd.db.connection import connect, database_failure
from syncd.db.schema import migrate
from syncd.errors import EXIT_OK, EXIT_RUN_FAILED, ConfigError, SyncdError, UsageError
from syncd.metrics import disable_created_series
from syncd.service.status import entity_status, format_table
from syncd.sync.incremental import Engine, RunOutcome, RunResult
from syncd.sync.rewind import rewind


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keeps PostgreSQL tables in step with HTTP JSON APIs.",
        epilog="Configuration: -c FILE, else $SYNCD_CONFIG, else /etc/syncd/syncd.yaml. "
        "Exit status: 0 success, 1 a sync run failed, 2 usage or configuration error. "
        "Each command has --help. Operators' documentation: docs/operations.md and "
        "docs/configuration.md (in /usr/share/doc/syncd when installed from the package).",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="the YAML configuration file")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "run",
        help="the daemon, in the foreground (systemd Type=notify)",
        description="Run the daemon: sync every entity on its schedule, serve metrics, "
        "health and status on http.listen, reload on SIGHUP, stop cleanly on SIGTERM.",
    )
    sync = commands.add_parser(
        "sync",
        help="one incremental pass, then exit",
        description="Run one incremental pass over the named entities (default: all), "
        "up to scheduler.max_concurrent at once, print one line per entity and exit "
        "0 if every run succeeded, 1 if one failed.",
    )
    sync.add_argument("entities", nargs="*", metavar="ENTITY")

    preload = commands.add_parser(
        "preload",
        help="backfill an entity's history in calendar chunks",
        description="Run the entity's configured preload (resuming after the last "
        "committed chunk), or with --from re-read a range by hand (moving no progress). "
        "Timestamps: 'YYYY-MM-DD HH:MM:SS' or ISO 8601, in the source time zone "
        "without an offset. A progress bar on a terminal, one line per chunk otherwise. "
        "Ctrl-C stops after the page being written commits.",
    )
    preload.add_argument("entity", metavar="ENTITY")
    preload.add_argument("--from", dest="start", metavar="TS", help="start of a range by hand")
    preload.add_argument("--to", dest="end", metavar="TS", help="end of the range (default: E)")
    preload.add_argument("--chunk", metavar="STEP", help="chunk size: 1d, 1w, 1mo, 1y (N times)")

    rewind = commands.add_parser(
        "rewind",
        help="move an entity's watermark back, to sync again from a time",
        description="Set the entity's watermark to TS, so its next incremental run reads "
        "from TS again (minus window.lookback). Waits for a run in progress to end (its "
        "lock), so the run cannot undo the rewind. TS: 'YYYY-MM-DD HH:MM:SS' or ISO 8601, "
        "in the source time zone without an offset.",
    )
    rewind.add_argument("entity", metavar="ENTITY")
    rewind.add_argument("--to", dest="to", metavar="TS", required=True, help="the new watermark")
    rewind.add_argument(
        "--forward",
        action="store_true",
        help="allow a TS after the watermark (the records in between are skipped)",
    )
    rewind.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for a run in progress (default 60)",
    )

    status = commands.add_parser(
        "status",
        help="per entity: watermark, last run, rows, lag, last error",
        description="Show each entity's watermark, lag, last run and last error.",
    )
    status.add_argument("--json", action="store_true", help="print a JSON array")

    commands.add_parser(
        "check-config",
        help="validate the configuration file",
        description="Validate the configuration; print FILE:LINE: key.path: message for each "
        "problem and exit 2, or exit 0 when it is valid.",
    )
    commands.add_parser(
        "migrate",
        help="create missing tables and columns",
        description="Create syncd's tables and each entity's table, and add columns the "
        "configuration gained. Never drops or converts data.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    disable_created_series()  # process-wide, before any registry is scraped
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(words)
    logs.configure(debug=args.debug)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for problem in exc.problems:
            logs.print_error(problem)
        return exc.exit_status
    except SyncdError as exc:
        if args.debug:
            raise
        logs.print_error(f"syncd: {exc}")
        return exc.exit_status
    except psycopg2.Error as exc:
        if args.debug:
            raise
        logs.print_error(f"syncd: {database_failure(exc)}")
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. http.listen already in use
        if args.debug:
            raise
        logs.print_error(f"syncd: {exc.strerror or exc}")
        return EXIT_RUN_FAILED
    except Exception as exc:  # a bug: one line still, the traceback with --debug
        if args.debug:
            raise
        logs.print_error(
            f"syncd: internal error: {type(exc).__name__}: {exc} (--debug shows where)"
        )
        return EXIT_RUN_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    path = args.config or default_config_path(os.environ)
    if args.command == "run":
        from syncd.service.daemon import Daemon

        return Daemon(path).run()
    config = load_config(path)
    if args.command == "check-config":
        print(f"{path}: ok ({len(config.entities)} entities: {', '.join(config.entities)})")
        return EXIT_OK
    if args.command == "migrate":
        return _migrate(config)
    if args.command == "status":
        return _status(config, as_json=args.json)
    if args.command == "sync":
        return _sync(config, args.entities)
    if args.command == "rewind":
        return _rewind(config, args.entity, args.to, args.wait, forward=args.forward)
    if args.command == "preload":
        return run_preload(config, args.entity, args.start, args.end, args.chunk)
    raise UsageError(f"unknown command {args.command}")


def _migrate(config: Config) -> int:
    conn = connect(config.database)
    try:
        changes = migrate(conn, config)
    finally:
        conn.close()
    for change in changes:
        print(change)
    print(f"schema {config.database.schema}: up to date ({len(changes)} changes)")
    return EXIT_OK


def _status(config: Config, *, as_json: bool) -> int:
    conn = connect(config.database)
    try:
        report = entity_status(conn, config, datetime.now(UTC))
    finally:
        conn.close()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return EXIT_OK


def _rewind(config: Config, name: str, to: str, wait: float, *, forward: bool) -> int:
    check_entities(config, [name])
    try:
        moment = parse_timestamp(to, config.entities[name].source.timezone)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    if not 0 <= wait <= 86_400:
        raise UsageError("--wait: between 0 and 86400 seconds")
    old, new = rewind(config, name, moment, wait, forward=forward)
    print(f"{name}: watermark {old.isoformat()} -> {new.isoformat()}")
    return EXIT_OK


def _sync(config: Config, names: Sequence[str]) -> int:
    chosen = check_entities(config, names)
    migrate_first(config)
    results = Engine(config, command_metrics(config)).sync_many(chosen)
    for result in results:
        print(sync_summary(result))
    return EXIT_RUN_FAILED if any(r.outcome == RunOutcome.FAILED for r in results) else EXIT_OK


def sync_summary(result: RunResult) -> str:
    """The line `syncd sync` prints for one entity's run."""
    if result.outcome == RunOutcome.SKIPPED:
        return f"{result.entity}: skipped: another syncd instance is syncing it"
    counts = (
        f"{result.fetched} fetched, {result.written} written, {result.rejected} rejected, "
        f"watermark {result.watermark.isoformat() if result.watermark else '-'}, "
        f"{result.seconds:.1f}s"
    )
    if result.outcome == RunOutcome.OK:
        return f"{result.entity}: ok: {counts}"
    return f"{result.entity}: failed: {result.error} ({counts})"


if __name__ == "__main__":
    sys.exit(main())
