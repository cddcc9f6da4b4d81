"""The throwaway PostgreSQL cluster and its fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from devtools import devcluster
from devtools.devcluster import Cluster, DevClusterError


def query(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement in its own committed transaction; return its rows, if any."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def reachable(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.fixture
def running_again(pg_cluster: Cluster, pg_dsn: str) -> Iterator[Cluster]:
    """The session cluster, started again afterwards whatever the test did to it.

    Requesting pg_dsn makes pytest set that up first and so tear it down (drop its
    database, which needs a running server) only after the restart below."""
    try:
        yield pg_cluster
    finally:
        pg_cluster.start()


def test_fixture_gives_a_working_database(pg_dsn: str) -> None:
    query(pg_dsn, "CREATE TABLE item (id int PRIMARY KEY, name text)")
    query(pg_dsn, "INSERT INTO item VALUES (1, 'één')")
    assert query(pg_dsn, "SELECT id, name FROM item") == [(1, "één")]
    assert query(pg_dsn, "SHOW server_encoding") == [("UTF8",)]


def test_databases_are_isolated(pg_cluster: Cluster, pg_dsn: str) -> None:
    other_dsn = pg_cluster.create_database("isolation_other")
    try:
        assert other_dsn != pg_dsn
        query(pg_dsn, "CREATE TABLE only_here (id int)")
        assert query(other_dsn, "SELECT to_regclass('only_here') IS NULL") == [(True,)]
    finally:
        pg_cluster.drop_database("isolation_other")


def test_create_database_starts_afresh(pg_cluster: Cluster) -> None:
    dsn = pg_cluster.create_database("afresh")
    query(dsn, "CREATE TABLE leftover (id int)")
    conn = psycopg2.connect(dsn)  # left open: recreating must not trip over it
    try:
        dsn = pg_cluster.create_database("afresh")
        assert query(dsn, "SELECT to_regclass('leftover') IS NULL") == [(True,)]
    finally:
        conn.close()
        pg_cluster.drop_database("afresh")


def test_restart_keeps_data(running_again: Cluster, pg_dsn: str) -> None:
    port = running_again.port
    query(pg_dsn, "CREATE TABLE kept AS SELECT 42 AS answer")
    running_again.restart()
    assert running_again.port == port
    assert query(pg_dsn, "SELECT answer FROM kept") == [(42,)]


def test_kill_then_start_recovers(running_again: Cluster, pg_dsn: str) -> None:
    # The test tuning commits asynchronously; this commit must be in the WAL before
    # the crash, or losing it would be correct behaviour rather than a failure.
    query(pg_dsn, "SET synchronous_commit = on; CREATE TABLE survivor AS SELECT 7 AS n")
    running_again.kill()
    assert not reachable(pg_dsn)
    running_again.start()
    assert query(pg_dsn, "SELECT n FROM survivor") == [(7,)]


def test_start_and_stop_are_idempotent(running_again: Cluster, pg_dsn: str) -> None:
    running_again.start()
    assert reachable(pg_dsn)
    running_again.stop()
    running_again.stop()
    assert not reachable(pg_dsn)


# --- command line -------------------------------------------------------------------------


@pytest.fixture
def cli_datadir() -> Iterator[Path]:
    # Under the temp dir itself, for the reason given in tests/pg_fixtures.py; mkdtemp
    # makes it 0700, so let others (the `postgres` user) through to the data directory.
    base = Path(tempfile.mkdtemp(prefix="syncd-cli-"))
    base.chmod(0o711)
    try:
        yield base / "pg"
    finally:
        try:
            Cluster(base / "pg").stop("immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.devcluster", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cli_start_dsn_stop_round_trip(cli_datadir: Path) -> None:
    dsn = cli("start", str(cli_datadir))
    assert dsn.startswith("postgresql://postgres@127.0.0.1:") and dsn.endswith("/syncd")
    assert query(dsn, "SELECT current_database()") == [("syncd",)]
    query(dsn, "CREATE TABLE kept (id int)")
    assert cli("dsn", str(cli_datadir)) == dsn

    cli("stop", str(cli_datadir))
    assert not reachable(dsn)

    # Started again: same port, and the existing `syncd` database is kept, not recreated.
    assert cli("start", str(cli_datadir)) == dsn
    assert query(dsn, "SELECT to_regclass('kept') IS NOT NULL") == [(True,)]
    assert query(dsn, "SHOW fsync") == [("on",)]  # the CLI defaults to durable settings
    cli("stop", str(cli_datadir))


def test_cli_dsn_without_cluster_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.devcluster", "dsn", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "run `start` first" in result.stderr


# --- finding binaries and permissions ---------------------------------------------------------


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for tool in ("initdb", "pg_ctl", "postgres"):
        (path / tool).write_text("#!/bin/sh\n")
        (path / tool).chmod(0o755)
    return path


def test_highest_installed_version_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("9.6", "16", "13"):
        fake_bindir(tmp_path / version / "bin")
    (tmp_path / "17").mkdir()  # an incomplete install is skipped
    monkeypatch.setattr(devcluster, "PG_LIB_DIR", tmp_path)
    monkeypatch.delenv(devcluster.PG_BIN_ENV, raising=False)
    assert devcluster.find_pg_bin() == tmp_path / "16" / "bin"


def test_env_override_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    override = fake_bindir(tmp_path / "custom")
    monkeypatch.setenv(devcluster.PG_BIN_ENV, str(override))
    assert devcluster.find_pg_bin() == override


def test_missing_binaries_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(devcluster, "PG_LIB_DIR", tmp_path / "absent")
    monkeypatch.delenv(devcluster.PG_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevClusterError, match="install the `postgresql` package"):
        devcluster.find_pg_bin()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to `postgres`")
def test_root_refuses_a_datadir_postgres_cannot_reach() -> None:
    private = Path(tempfile.mkdtemp(prefix="syncd-private-"))  # 0700, owned by root
    try:
        with pytest.raises(DevClusterError, match=f"{private} is not searchable"):
            Cluster(private / "data").init()
    finally:
        shutil.rmtree(private)
