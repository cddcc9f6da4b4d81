"""A private PostgreSQL cluster for tests, the benchmark and `make run`.

The cluster lives entirely inside one data directory: configuration, unix socket and
log. It listens on 127.0.0.1 only, with trust authentication for the `postgres`
superuser, so it must never hold anything worth protecting.

PostgreSQL refuses to run as root. When we are root, every server-side command
(initdb, pg_ctl) runs as the `postgres` system user instead, and the data directory
is handed over to that user.

Command line (the DSN printed by `start` and `dsn` is that of database `syncd`):

    python -m devtools.devcluster start DATADIR [--port N] [--tuned-for-tests]
    python -m devtools.devcluster stop DATADIR
    python -m devtools.devcluster dsn DATADIR
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from syncd.errors import SyncdError

# Debian/Ubuntu install each major version side by side under here.
PG_LIB_DIR = Path("/usr/lib/postgresql")
PG_BIN_ENV = "SYNCD_PG_BIN"
SERVER_ACCOUNT = "postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
CLI_DATABASE = "syncd"

# Our settings live in their own file, included from postgresql.conf, so that they can
# be rewritten on every start without parsing the file initdb generated.
SETTINGS_FILE = "syncd.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"
PID_FILE = "postmaster.pid"

# Throwaway clusters trade crash safety for speed.
TEST_TUNING = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "100",
}

HBA_CONF = """\
# Written by devtools.devcluster: trust, but only over the socket and from 127.0.0.1.
local all all trust
host  all all 127.0.0.1/32 trust
"""

# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
START_TIMEOUT_S = 60
KILL_TIMEOUT_S = 10


class DevClusterError(SyncdError):
    """The development cluster could not be set up, started or stopped."""


# --- finding the server binaries ------------------------------------------------------


def _has_server_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    """Version directory name to sort key: "9.6" → (9, 6); a non-version sorts first."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return ()


def find_pg_bin() -> Path:
    """The directory holding initdb and pg_ctl: $SYNCD_PG_BIN, else the highest version
    under /usr/lib/postgresql, else whatever directory of $PATH has pg_ctl."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        if not _has_server_tools(Path(override)):
            raise DevClusterError(f"{PG_BIN_ENV}={override} does not contain initdb and pg_ctl")
        return Path(override)
    if PG_LIB_DIR.is_dir():
        versions = sorted(PG_LIB_DIR.iterdir(), key=lambda p: _version_key(p.name), reverse=True)
        for version_dir in versions:
            if _has_server_tools(version_dir / "bin"):
                return version_dir / "bin"
    on_path = shutil.which("pg_ctl")
    if on_path and _has_server_tools(Path(on_path).parent):
        return Path(on_path).parent
    raise DevClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the `postgresql` "
        f"package (e.g. `apt-get install postgresql`) or set {PG_BIN_ENV} to their directory"
    )


# --- processes -------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None if it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _pid_alive(pid: int) -> bool:
    if Path("/proc/self/stat").exists():
        # A zombie counts as dead: where PID 1 does not reap orphans (some containers),
        # a killed postmaster stays a zombie forever and kill(pid, 0) still succeeds.
        info = _proc_stat(pid)
        return info is not None and info[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(pid: int) -> list[int]:
    """Pids of the live children of `pid` (empty where there is no /proc)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return []
    children = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            info = _proc_stat(int(entry.name))
            if info is not None and info[1] == pid and info[0] != "Z":
                children.append(int(entry.name))
    return children


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- the data directory ------------------------------------------------------------------


def configured_port(datadir: Path) -> int | None:
    """The port a previous start() recorded in the data directory, if any."""
    try:
        text = (datadir / SETTINGS_FILE).read_text()
    except OSError:
        return None
    match = re.search(r"^port\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _conf_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _server_account() -> pwd.struct_passwd | None:
    """The account the server must run as, or None for "whoever we are"."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise DevClusterError(
            f"running as root, but there is no `{SERVER_ACCOUNT}` user to run PostgreSQL as: "
            "install the `postgresql` package or run as a normal user"
        ) from None


def _untraversable_ancestor(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first ancestor of `path` that `account` may not search, judged by mode bits."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for ancestor in reversed(path.parents):
        st = ancestor.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return ancestor
    return None


class Cluster:
    """One PostgreSQL cluster in `datadir`, listening on 127.0.0.1:`port`.

    `port` None means: the port recorded by an earlier start in this data directory,
    else a free one. `tuned_for_tests` turns off durability for speed.
    """

    def __init__(
        self, datadir: Path, port: int | None = None, *, tuned_for_tests: bool = True
    ) -> None:
        # Absolute, because the server tools run with / as their working directory.
        self.datadir = Path(datadir).resolve()
        if port is None:
            port = configured_port(self.datadir)
        self._port = port if port is not None else free_port()
        self.tuned_for_tests = tuned_for_tests
        self.log_path = self.datadir / "log" / "postgresql.log"
        self._account = _server_account()
        self._bindir: Path | None = None

    def __repr__(self) -> str:
        return f"Cluster({str(self.datadir)!r}, port={self._port})"

    @property
    def port(self) -> int:
        return self._port

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port}/{quote(dbname, safe='')}"

    # --- lifecycle ---------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster unless the data directory already holds one."""
        self._prepare_datadir()
        if self.initialized:
            return
        self._run_tool(
            "initdb",
            f"--pgdata={self.datadir}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            # C collation works whatever locales the machine has installed.
            "--locale=C",
            "--no-sync",
        )
        self._write_file(self.datadir / "pg_hba.conf", HBA_CONF)

    def start(self) -> None:
        """Initialise if needed and start; do nothing if the server already runs."""
        if self._running_pid() is not None:
            running_port = configured_port(self.datadir)
            if running_port is not None and running_port != self._port:
                raise DevClusterError(f"{self.datadir} is already running on port {running_port}")
            return
        self.init()
        self._remove_stale_lock_files()
        self._write_settings()
        self._make_dir(self.log_path.parent)
        result = self._run_tool(
            "pg_ctl",
            "start",
            "--wait",
            f"--timeout={START_TIMEOUT_S}",
            f"--pgdata={self.datadir}",
            f"--log={self.log_path}",
            check=False,
        )
        if result.returncode != 0:
            raise DevClusterError(f"PostgreSQL in {self.datadir} did not start: {self._log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode`: smart, fast or immediate); nothing if it is not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if self._running_pid() is None:
            return
        self._run_tool(
            "pg_ctl",
            "stop",
            "--wait",
            f"--timeout={START_TIMEOUT_S}",
            f"--pgdata={self.datadir}",
            f"--mode={mode}",
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and every server process at once.

        Killing the children too (each runs in a session of its own, so killpg would
        miss them) means no orphaned backend keeps the old shared memory attached and
        makes the next start() fail; that start() then goes through crash recovery.
        """
        pid = self._running_pid()
        if pid is None:
            return
        # Frozen, the postmaster cannot fork a child we would miss while listing them.
        os.kill(pid, signal.SIGSTOP)
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while any(_pid_alive(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise DevClusterError(f"PostgreSQL processes of {self.datadir} survived SIGKILL")
            time.sleep(0.01)

    # --- databases -----------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database `name` afresh (dropping any old one) and return its DSN."""
        with self._admin_connection() as conn, conn.cursor() as cur:
            cur.execute(self._drop_statement(conn, name))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def ensure_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its DSN."""
        with self._admin_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self._admin_connection() as conn, conn.cursor() as cur:
            cur.execute(self._drop_statement(conn, name))

    @contextlib.contextmanager
    def _admin_connection(self) -> Iterator[PgConnection]:
        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        try:
            # CREATE/DROP DATABASE refuse to run inside a transaction block.
            conn.autocommit = True
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _drop_statement(conn: PgConnection, name: str) -> sql.Composed:
        # FORCE (PostgreSQL 13+) disconnects sessions a test may have left open.
        force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
        return sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force)

    # --- internals -------------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        try:
            first_line = (self.datadir / PID_FILE).read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _remove_stale_lock_files(self) -> None:
        """Remove the pid and socket lock files a crashed server left behind.

        The server removes stale ones itself, except when the pid they name is a
        zombie, which is what a killed postmaster stays where PID 1 does not reap
        orphans. Only called when no server runs, and the socket directory is ours.
        """
        (self.datadir / PID_FILE).unlink(missing_ok=True)
        for leftover in self.datadir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)

    def _settings(self) -> dict[str, str]:
        socket_dir = str(self.datadir)
        socket_path = f"{socket_dir}/.s.PGSQL.{self._port}"
        settings = {
            "port": str(self._port),
            "listen_addresses": _conf_string(HOST),
            # A data directory too deep for a socket path just goes without one:
            # clients use TCP anyway.
            "unix_socket_directories": _conf_string(
                socket_dir if len(socket_path) <= MAX_SOCKET_PATH else ""
            ),
        }
        if self.tuned_for_tests:
            settings.update(TEST_TUNING)
        return settings

    def _write_settings(self) -> None:
        lines = [f"{key} = {value}" for key, value in self._settings().items()]
        header = "# Written by devtools.devcluster on every start; edits will be lost.\n"
        self._write_file(self.datadir / SETTINGS_FILE, header + "\n".join(lines) + "\n")
        main_conf = self.datadir / "postgresql.conf"
        text = main_conf.read_text()
        if INCLUDE_LINE not in text:
            self._write_file(main_conf, text.rstrip("\n") + "\n\n" + INCLUDE_LINE + "\n")

    def _prepare_datadir(self) -> None:
        """Create the data directory and, as root, hand it to the server account."""
        if self._account is not None and self.initialized:
            owner = self.datadir.stat().st_uid
            if owner != self._account.pw_uid:
                raise DevClusterError(
                    f"{self.datadir} belongs to uid {owner}, but PostgreSQL would run as "
                    f"`{SERVER_ACCOUNT}`: remove it or run as its owner"
                )
        self._make_dir(self.datadir)
        if self._account is not None:
            self._check_traversable()

    def _check_traversable(self) -> None:
        assert self._account is not None
        # One real access check as the server account catches ACLs that mode bits miss.
        probe = self._run_as_server(["test", "-x", str(self.datadir)])
        if probe.returncode == 0:
            return
        blocker = _untraversable_ancestor(self.datadir, self._account) or self.datadir.parent
        raise DevClusterError(
            f"the `{SERVER_ACCOUNT}` user cannot reach {self.datadir}: {blocker} is not "
            f"searchable by it (chmod o+x {blocker}, or put the cluster elsewhere)"
        )

    def _make_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._hand_over(path)
        # PostgreSQL refuses a data directory that others can read.
        if path == self.datadir:
            path.chmod(0o700)

    def _write_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        self._hand_over(path)

    def _hand_over(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return f"no log at {self.log_path}"
        return " | ".join(tail) or f"empty log at {self.log_path}"

    def _run_tool(
        self, tool: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if self._bindir is None:
            self._bindir = find_pg_bin()
        result = self._run_as_server([str(self._bindir / tool), *args])
        if check and result.returncode != 0:
            output = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise DevClusterError(f"{tool} failed (exit {result.returncode}): {output}")
        return result

    def _run_as_server(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run `argv` as the server account, with PG* variables of the caller removed
        (a stray PGDATA or PGPORT must not redirect the tools)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        account = self._account
        return subprocess.run(
            argv,
            env=env,
            # Our working directory may be one the server account cannot enter.
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
            timeout=START_TIMEOUT_S + 30,
            # subprocess switches ids itself (no su/runuser, PAM or shell quoting).
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=os.getgrouplist(account.pw_name, account.pw_gid) if account else None,
        )


# --- command line ------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devcluster", description="A private PostgreSQL for development."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="init if needed, start, print the DSN of `syncd`")
    start.add_argument("datadir", type=Path)
    start.add_argument("--port", type=int, help="default: the last one used, else a free one")
    start.add_argument(
        "--tuned-for-tests", action="store_true", help="fsync off etc.: fast but not crash-safe"
    )
    commands.add_parser("stop", help="stop the server").add_argument("datadir", type=Path)
    commands.add_parser("dsn", help="print the DSN of `syncd`").add_argument("datadir", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.command == "start":
            cluster = Cluster(args.datadir, args.port, tuned_for_tests=args.tuned_for_tests)
            cluster.start()
            print(cluster.ensure_database(CLI_DATABASE))
        elif args.command == "stop":
            Cluster(args.datadir).stop()
            print(f"stopped PostgreSQL in {args.datadir}")
        else:
            port = configured_port(args.datadir)
            if port is None:
                raise DevClusterError(f"no cluster in {args.datadir}: run `start` first")
            print(Cluster(args.datadir, port).dsn(CLI_DATABASE))
    except SyncdError as err:
        print(f"devcluster: {err}", file=sys.stderr)
        return err.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
