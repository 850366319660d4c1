"""The workers' load board and the connection balancer, as two stand-in workers in one process (no server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import bentoml
import pytest

from service.balance import ACTIVE_S, CLOSE, CLOSE_EVERY, ConnectionBalancer, LoadBoard, worker_board

PEER = ("127.0.0.1", 40000)


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def answer(balancer: ConnectionBalancer, port: int) -> list[tuple[bytes, bytes]]:
    """The headers ``balancer`` answers a request from client port ``port`` with."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "client": (PEER[0], port), "headers": []}
    asyncio.run(balancer(scope, receive, send))
    return sent[0]["headers"]


def workers(tmp_path: Path) -> tuple[ConnectionBalancer, LoadBoard]:
    """Worker 1 behind its balancer, and worker 2's board: both on one shared file."""
    path = tmp_path / "board.bin"
    return ConnectionBalancer(ok, lambda: LoadBoard(path, 1)), LoadBoard(path, 2)


def test_a_worker_ahead_closes_connections_until_it_is_not(tmp_path: Path) -> None:
    first, second = workers(tmp_path)
    second.publish(0)
    closing = [CLOSE in answer(first, port) for port in range(40000, 40020)]
    # One connection is kept, the second makes it two ahead and is closed; then one answer in CLOSE_EVERY.
    assert [port for port, closed in zip(range(40000, 40020), closing, strict=True) if closed] == [
        40001,
        40001 + CLOSE_EVERY,
        40001 + 2 * CLOSE_EVERY,
    ]
    second.publish(40)
    assert not any(CLOSE in answer(first, port) for port in range(40030, 40050))


def test_balanced_or_lonely_workers_close_nothing(tmp_path: Path) -> None:
    first, second = workers(tmp_path)
    second.publish(8)
    assert not any(CLOSE in answer(first, port) for port in range(40000, 40009))
    alone = ConnectionBalancer(ok, lambda: LoadBoard(tmp_path / "alone.bin", 1))
    assert not any(CLOSE in answer(alone, port) for port in range(40000, 40009))
    outside_a_server = ConnectionBalancer(ok, lambda: None)
    assert not any(CLOSE in answer(outside_a_server, port) for port in range(40000, 40009))


def test_an_idle_or_dead_worker_counts_as_it_should(tmp_path: Path) -> None:
    path = tmp_path / "board.bin"
    now = [0]
    first = LoadBoard(path, 1, clock=lambda: now[0])
    second = LoadBoard(path, 2, clock=lambda: now[0])
    second.publish(7)
    assert first.least_loaded_other() == 7
    now[0] += int(ACTIVE_S * 1e9) + 1  # no request for longer than a connection stays active: idle
    assert first.least_loaded_other() == 0
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    second.pid = int(finished.stdout)  # a worker that died keeps its slot until its index restarts
    second.publish(0)
    assert first.least_loaded_other() is None


def test_the_board_opens_at_startup_so_an_idle_worker_is_seen(tmp_path: Path) -> None:
    opened: list[Path] = []

    def board() -> LoadBoard:
        opened.append(tmp_path / "board.bin")
        return LoadBoard(opened[-1], 2)

    balancer = ConnectionBalancer(ok, board)

    async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    balancer.app = lifespan
    asyncio.run(balancer({"type": "lifespan"}, None, None))
    assert len(opened) == 1
    assert LoadBoard(opened[0], 1).least_loaded_other() == 0


def test_a_worker_that_cannot_open_the_board_serves_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bentoml.server_context, "worker_index", 1)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    assert worker_board() is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    board = worker_board()
    assert board is not None
    assert board.worker == 1
    monkeypatch.setattr(bentoml.server_context, "worker_index", None)  # in process: one worker, no board
    assert worker_board() is None
