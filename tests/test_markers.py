"""tests/markers.py: how a test is found to start child processes (the `process` marker,
which keeps it out of `make test-fast`).

The functions looked at are parameters, never named in a test's own code: naming them
there would make the test itself one that starts processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_support import Daemons, daemons
from tests.markers import starts_processes
from tests.support import write_config


def runs_a_command() -> None:
    subprocess.run(["true"], check=True)


def forks() -> None:
    if os.fork() == 0:
        os._exit(0)


def through_a_helper() -> None:
    runs_a_command()


def in_a_lambda() -> None:
    (lambda: subprocess.run(["true"], check=True))()


def starts_a_thread() -> None:
    threading.Thread(target=print).start()


def reads_the_environment() -> None:
    os.environ.get("HOME")


@contextlib.contextmanager
def wrapped() -> Iterator[None]:
    runs_a_command()
    yield


def through_a_context_manager() -> None:
    with wrapped():
        pass


def through_a_class(folder: Path) -> None:
    Daemons(folder)


@pytest.mark.parametrize(
    "function",
    [
        runs_a_command,
        forks,
        through_a_helper,
        in_a_lambda,
        through_a_context_manager,
        through_a_class,
        daemons,
    ],
)
def test_a_process_started_directly_or_through_our_helpers_is_found(function: object) -> None:
    assert starts_processes(function)


@pytest.mark.parametrize("function", [starts_a_thread, reads_the_environment, write_config])
def test_threads_and_the_environment_are_not_processes(function: object) -> None:
    assert not starts_processes(function)
