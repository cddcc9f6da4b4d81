"""What syncd tells systemd: readiness, status, reloads, stopping, watchdog (the
messages and when they are sent: docs/operations.md, "Running under systemd").

Messages go through `sdnotify` to the datagram socket named by $NOTIFY_SOCKET; without
it (not started by systemd) every call is a cheap no-op. sdnotify never raises and
encodes latin-1, so a STATUS text is cut down here to one short printable-ASCII line.
Nothing read from the environment is ever put into a message.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import sdnotify

STATUS_MAX = 200


def status_line(text: str) -> str:
    """`text` as one line of printable ASCII, at most STATUS_MAX characters."""
    line = " ".join(text.split())  # newlines, tabs and runs of blanks become one space
    line = "".join(c if " " <= c <= "~" else "?" for c in line)
    return line if len(line) <= STATUS_MAX else line[: STATUS_MAX - 3] + "..."


def _uint(value: str | None) -> int | None:
    """A decimal number as systemd writes it, or None (absent, empty, signed, `1_0`...)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


class _Sender(sdnotify.SystemdNotifier):  # type: ignore[misc]  # sdnotify has no types
    """sdnotify's notifier connected to a given address: sdnotify itself only reads
    os.environ, and Notifier takes its environment as a parameter. Sending (latin-1,
    every error swallowed) stays sdnotify's."""

    def __init__(self, address: str) -> None:
        self.debug = False
        if address.startswith("@"):  # an abstract socket name, as sdnotify spells it
            address = "\0" + address[1:]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        # A reader that stops reading (the queue holds ~10 datagrams) must not stall
        # the loop and with it the watchdog: give up on a message after a second.
        sock.settimeout(1.0)
        self.socket = sock


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._sender: _Sender | None = None
        address = env.get("NOTIFY_SOCKET", "")
        if address:
            try:
                self._sender = _Sender(address)
            except OSError:  # no such socket, or a name too long: stay silent
                self._sender = None
        self._interval = self._watchdog_interval(env, os.getpid() if pid is None else pid)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
        usec = _uint(env.get("WATCHDOG_USEC"))
        if not usec:
            return None
        if "WATCHDOG_PID" in env and _uint(env["WATCHDOG_PID"]) != pid:
            return None  # the watchdog is meant for another process (e.g. our parent)
        return usec / 2_000_000

    def _send(self, message: str) -> None:
        if self._sender is not None:
            self._sender.notify(message)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status_line(status)}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={status_line(text)}")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload) to
        # tell this reload from an earlier one; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before systemd's start (or stop) timeout kills us;
        another message must come within that time (systemd >= 236)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two WATCHDOG=1 (half of WATCHDOG_USEC), or None: no watchdog."""
        return self._interval

    def watchdog(self) -> None:
        if self._interval is not None:
            self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sender is not None:
            self._sender.socket.close()
            self._sender = None
