"""Polling until a condition holds, or a started server answers, with a clear failure when the time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any, TypeVar

import httpx

from devtools.processes import log_tail

T = TypeVar("T")


def wait_until(
    read: Callable[[], T],
    timeout_s: float,
    failure: str | Callable[[T | None], str],
    done: Callable[[T], object] = bool,
    pause_s: float = 0.3,
) -> T:
    """``read()`` every ``pause_s`` until ``done`` accepts its value (by default: until it is true), and return it.

    A read that raises ``OSError`` or ``httpx.HTTPError``, as a server still starting does, counts as not done.
    Past ``timeout_s`` raises ``TimeoutError`` with ``failure``: a message, or one made from the last value read
    (None when no read succeeded), chained to the last read's error if it raised one.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        error: Exception | None = None
        try:
            value = read()
        except (OSError, httpx.HTTPError) as raised:
            error = raised
        else:
            if done(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise TimeoutError(failure if isinstance(failure, str) else failure(last)) from error
        time.sleep(pause_s)


def wait_for_process(
    ready: Callable[[], object], what: str, process: Popen[Any], timeout_s: float, log: Path | None = None
) -> None:
    """Poll ``ready`` until it holds; fail if ``process`` exits first or the time is up, quoting the end of ``log``.

    Raises ``RuntimeError`` when the process exited, ``TimeoutError`` when the time is up; ``what`` names the
    server in both.
    """

    def ends() -> str:
        return f"; {log} ends:\n{log_tail(log)}" if log is not None else ""

    def running_and_ready() -> object:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}{ends()}")
        return ready()

    wait_until(running_and_ready, timeout_s, lambda _: f"{what} not ready after {timeout_s:g} s{ends()}")


def wait_ready(url: str, process: Popen[Any], timeout_s: float = 180.0, log: Path | None = None) -> None:
    """Until ``url`` answers 200, as a started server's readiness path does; see :func:`wait_for_process`."""
    wait_for_process(
        lambda: httpx.get(url, timeout=2).status_code == 200, f"the server of {url}", process, timeout_s, log
    )
