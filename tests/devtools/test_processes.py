"""devtools' process stops and waits, on real processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from devtools.processes import start_logged, stop
from devtools.waits import wait_until

# A server that ignores SIGTERM, with a worker in a session (so a process group) of its own that ignores it too, as
# BentoML's workers are: it prints the worker's pid, then both sleep.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                           "print('ready', flush=True); time.sleep(60)"], start_new_session=True)
print(worker.pid, flush=True)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (an exited process waits as a zombie until its parent reaps it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_server_that_stops_on_sigterm_returns_its_exit_code(tmp_path: Path) -> None:
    process = start_logged([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                           tmp_path / "log")  # fmt: skip
    wait_until(lambda: (tmp_path / "log").read_text(), 30, "the server never started")
    assert stop(process, timeout_s=30) == -15


def test_a_server_deaf_to_sigterm_is_killed_with_its_workers_past_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = start_logged([sys.executable, "-c", STUBBORN], log)
    lines = wait_until(lambda: log.read_text().split(), 30, "the server never started", lambda words: "ready" in words)
    worker = int(next(word for word in lines if word.isdigit()))
    started = time.monotonic()
    assert stop(process, timeout_s=1) is None
    assert time.monotonic() - started < 15
    assert process.poll() is not None
    wait_until(lambda: gone(worker), 10, f"the worker {worker} outlived its server")


def test_wait_until_returns_the_first_value_accepted() -> None:
    values: Iterator[int] = iter(range(100))
    assert wait_until(lambda: next(values), 10, "never", lambda n: n >= 3, pause_s=0.01) == 3


def test_wait_until_retries_a_server_that_refuses_connections() -> None:
    calls = iter([httpx.ConnectError("refused"), ConnectionRefusedError(), "answer"])

    def read() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(read, 10, "never", pause_s=0.01) == "answer"


def test_wait_until_fails_with_a_message_from_the_last_value() -> None:
    values: Iterator[int] = iter(range(1000))
    with pytest.raises(TimeoutError, match=r"stuck at \d+"):
        wait_until(lambda: next(values), 0.2, lambda last: f"stuck at {last}", lambda n: n < 0, pause_s=0.01)


def test_other_errors_are_not_retried() -> None:
    with pytest.raises(KeyError):
        wait_until(lambda: {}["missing"], 10, "never")
