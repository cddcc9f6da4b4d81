"""The sd_notify messages syncd sends, read back from a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.service.systemd import STATUS_MAX, Notifier, status_line

WAIT = 5.0  # seconds: no test waits longer for a datagram


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's, and its NOTIFY_SOCKET value."""
    path = str(tmp_path / "notify")  # short: AF_UNIX paths are limited to 107 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(WAIT)
    yield sock, path
    sock.close()


@pytest.fixture
def notifier(listener: tuple[socket.socket, str]) -> Iterator[Notifier]:
    notifier = Notifier({"NOTIFY_SOCKET": listener[1]})
    yield notifier
    notifier.close()


def receive(sock: socket.socket) -> dict[str, str]:
    """The next message, as its `KEY=value` lines."""
    data = sock.recv(4096).decode("ascii")
    return dict(line.split("=", 1) for line in data.split("\n"))


def nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(WAIT)
    return False


def test_ready_sends_ready_with_the_status(
    listener: tuple[socket.socket, str], notifier: Notifier
) -> None:
    notifier.ready("syncing 4 entities")
    assert receive(listener[0]) == {"READY": "1", "STATUS": "syncing 4 entities"}


def test_status_sends_only_the_status(
    listener: tuple[socket.socket, str], notifier: Notifier
) -> None:
    notifier.status("task: 120 rows")
    assert receive(listener[0]) == {"STATUS": "task: 120 rows"}


def test_reloading_sends_the_monotonic_clock_in_microseconds(
    listener: tuple[socket.socket, str], notifier: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = receive(listener[0])
    assert message.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_stopping_sends_stopping(listener: tuple[socket.socket, str], notifier: Notifier) -> None:
    notifier.stopping()
    assert receive(listener[0]) == {"STOPPING": "1"}


def test_a_multi_line_non_ascii_status_arrives_as_one_ascii_line(
    listener: tuple[socket.socket, str], notifier: Notifier
) -> None:
    notifier.status("reload refused:\n  données.yaml:3:\tbad\x00key €")
    assert receive(listener[0]) == {"STATUS": "reload refused: donn?es.yaml:3: bad?key ?"}


def test_a_long_status_is_cut_to_status_max_characters() -> None:
    line = status_line("x" * 1000)
    assert len(line) == STATUS_MAX
    assert line.endswith("...")
    assert status_line("y" * STATUS_MAX) == "y" * STATUS_MAX


def test_watchdog_sends_watchdog_when_systemd_asked_for_it(
    listener: tuple[socket.socket, str],
) -> None:
    env = {"NOTIFY_SOCKET": listener[1], "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}
    notifier = Notifier(env, pid=4242)
    notifier.watchdog()
    notifier.close()
    assert receive(listener[0]) == {"WATCHDOG": "1"}


def test_the_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval == 30.0
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, pid=7).watchdog_interval == (
        1.5
    )


def test_the_watchdog_pid_defaults_to_our_own_process() -> None:
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval == 0.5


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "ten"},
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4243"},
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": ""},
    ],
    ids=["unset", "empty", "zero", "negative", "not-a-number", "foreign-pid", "empty-pid"],
)
def test_no_watchdog_unless_watchdog_usec_is_valid_and_meant_for_us(env: dict[str, str]) -> None:
    assert Notifier(env, pid=4242).watchdog_interval is None


def test_watchdog_sends_nothing_when_meant_for_another_process(
    listener: tuple[socket.socket, str],
) -> None:
    env = {"NOTIFY_SOCKET": listener[1], "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}
    notifier = Notifier(env, pid=4242)
    notifier.watchdog()
    notifier.close()
    assert nothing_pending(listener[0])


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("address", [None, "", "/nonexistent/notify", "x" * 200])
def test_without_a_reachable_socket_every_call_is_a_silent_no_op(
    address: str | None, capfd: pytest.CaptureFixture[str]
) -> None:
    """No socket is kept open, no call raises or prints, and the watchdog interval is
    still read (the loop's waits follow it either way)."""
    env = {"WATCHDOG_USEC": "2000000"} | ({} if address is None else {"NOTIFY_SOCKET": address})
    fds = open_fds()
    notifier = Notifier(env)
    assert open_fds() == fds
    assert notifier.watchdog_interval == 1.0
    notifier.ready("up")
    notifier.status("still up")
    notifier.reloading()
    notifier.extend_timeout(70)
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert capfd.readouterr() == ("", "")


def test_a_socket_gone_after_start_is_not_an_error(
    listener: tuple[socket.socket, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """The reader goes away after the first message: the next ones fail to send
    (ECONNREFUSED), silently, and the notifier keeps answering."""
    notifier = Notifier({"NOTIFY_SOCKET": listener[1]})
    notifier.status("someone listens")
    assert receive(listener[0]) == {"STATUS": "someone listens"}
    listener[0].close()
    notifier.status("nobody listens")  # ECONNREFUSED, swallowed
    notifier.ready("still nobody")
    notifier.stopping()
    notifier.close()
    assert capfd.readouterr() == ("", "")


def test_an_abstract_socket_name_works() -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        notifier.close()
        assert receive(sock) == {"READY": "1", "STATUS": "up"}


def test_without_an_environ_the_process_environment_is_read(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener[1])
    notifier = Notifier()
    notifier.stopping()
    notifier.close()
    assert receive(listener[0]) == {"STOPPING": "1"}
