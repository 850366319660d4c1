"""Servers started in sessions of their own with their output in a log, and stopped however long they take."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil

ERROR_LINE = re.compile(r"^[FE]\d{4} |error|panic|fatal", re.IGNORECASE)


def start_logged(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own (its process group is its pid), its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def log_tail(log: Path, lines: int = 12) -> str:
    """Why a server failed, for the error itself (test folders are deleted): the log's last error lines, else its end.

    Error lines are those naming an error, a panic or a fatal stop, or glog's ``F``/``E`` lines (SeaweedFS); a Go
    server's fatal stop dumps every goroutine's stack after them.
    """
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"(unreadable: {error})"
    errors = [line for line in text if ERROR_LINE.search(line)]
    return "\n".join((errors or text)[-lines:])


def stop(process: subprocess.Popen[Any], timeout_s: float = 60.0) -> int | None:
    """Stop a server started in a session of its own, as an orchestrator does: SIGTERM to its group, then wait.

    Past ``timeout_s``, SIGKILL to the group and to every process the server had started: BentoML's workers run in
    process groups of their own, and one still stuck would outlive its server. Returns the server's exit code,
    None when it had to be killed.
    """
    if process.poll() is not None:
        return process.returncode
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        process.wait(10)
        return None
