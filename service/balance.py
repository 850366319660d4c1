"""Keep-alive connections spread across the service's workers, however they arrive.

`bentoml serve` opens one listening socket (circus, in the parent process) and hands its
descriptor to every worker; each worker's uvicorn serves it on uvloop, whose libuv accepts
*every* pending connection when woken. One burst of keep-alive connections (a client pool
starting, a load balancer reconnecting) is then often accepted by a single worker and stays
there while the other idles. Neither BentoML nor uvicorn has a setting for it: ``backlog`` only
sizes the queue, the kernel cannot balance one socket among processes the way SO_REUSEPORT
balances several, and libuv dropped its one-accept-per-wake-up switch (UV_TCP_SINGLE_ACCEPT).

So the workers balance themselves at the HTTP level. Each worker counts the connections that sent
it a request in the last ``ACTIVE_S`` seconds and publishes the count on a small board shared by
the workers of one server (:class:`LoadBoard`, a memory-mapped file). A worker holding at least
``SURPLUS`` more active connections than the least loaded live worker answers ``Connection:
close`` (at most one answer in ``CLOSE_EVERY``): the client reconnects at once, and under load the
idle worker, waiting in its event loop, accepts the new connection before the busy one gets to it. A
burst that landed on one busy worker spreads within a fraction of a second; a balanced server closes
(almost) nothing, and a single client never moves.
(Requests in flight would be the wrong measure: a worker busy with one request has not even read
the requests queued on its other connections.)
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml

# Slots of the board, one per worker index: (pid, active connections, when counted in ns).
MAX_WORKERS = 64
_SLOT = struct.Struct("qqq")
# A connection is active while its last request is younger than this; a count older than it means idle.
ACTIVE_S = 1.0
# Active connections by which a worker must lead the least loaded one before it closes one: 2, not 1,
# so that two workers with one connection between them in turn do not trade it back and forth.
SURPLUS = 2
# A worker closes at most one connection per this many answers. The reconnect reaches the other worker when
# this one is busy (it gets to its listening socket late); when both idle, it often comes straight back, and
# closing every answer would cost each request a new connection for nothing. 1 in 8 bounds that waste and
# still moves a burst within a fraction of a second under load.
CLOSE_EVERY = 8
CLOSE = (b"connection", b"close")
log = logging.getLogger(__name__)


class LoadBoard:
    """Active connections per worker of one server, in a file every worker of it maps.

    Each field is an aligned 8-byte store, so a reader sees a worker's old value or its new one; a
    count a moment stale only delays a decision by one response.
    """

    def __init__(self, path: Path, worker: int, clock: Callable[[], int] = time.monotonic_ns):
        if not 1 <= worker <= MAX_WORKERS:
            raise ValueError(f"worker index {worker} is outside 1..{MAX_WORKERS}")
        size = _SLOT.size * MAX_WORKERS
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.worker = worker
        self.pid = os.getpid()
        self.clock = clock
        self.publish(0)

    def publish(self, connections: int) -> None:
        _SLOT.pack_into(self._map, (self.worker - 1) * _SLOT.size, self.pid, connections, self.clock())

    def least_loaded_other(self) -> int | None:
        """The fewest active connections of another live worker; None when this worker is alone."""
        now = self.clock()
        loads = sorted(
            (0 if now - counted > ACTIVE_S * 1e9 else connections, pid)  # no request for that long: idle
            for index, (pid, connections, counted) in enumerate(_SLOT.iter_unpack(self._map))
            if pid and index != self.worker - 1
        )
        return next((connections for connections, pid in loads if _alive(pid)), None)


def _alive(pid: int) -> bool:
    """A worker that died keeps its slot until its index restarts: it must not look idle meanwhile."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user
        return True
    return True


def worker_board() -> LoadBoard | None:
    """This worker's slot on its server's board; None outside `bentoml serve`'s workers (one process, no board).

    The board lives in the folder `bentoml serve` gives every worker for Prometheus (writable even in the
    read-only image, emptied at each start), named after the server process, the workers' common parent.
    """
    worker = bentoml.server_context.worker_index
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if worker is None or not directory:
        return None
    try:
        return LoadBoard(Path(directory) / f"housing-worker-load-{os.getppid()}.bin", worker)
    except OSError as exc:  # a worker without the board still serves; it only no longer hands connections on
        log.warning("connection balancing off in worker %s: %s", worker, exc)
        return None


class ConnectionBalancer:
    """ASGI middleware: counts this worker's active connections and closes one after its answer while ahead."""

    def __init__(self, app: Any, board: Callable[[], LoadBoard | None]):
        self.app = app
        # A callable: the board is opened in the worker when its server starts (the lifespan event passes here
        # first), not where the app is built; an idle worker must be on the board for the busy one to see it.
        self._open_board = board
        self._board: LoadBoard | None = None
        self._opened = False
        self._active: OrderedDict[Any, int] = OrderedDict()  # client address -> last request (ns), oldest first
        self._answers_since_close = CLOSE_EVERY

    def board(self) -> LoadBoard | None:
        if not self._opened:
            self._board, self._opened = self._open_board(), True
        return self._board

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        board = self.board()
        if board is None or scope["type"] != "http" or not scope.get("client"):
            await self.app(scope, receive, send)
            return
        client = tuple(scope["client"])
        connections = self._seen(client, board.clock())
        board.publish(connections)

        async def send_closing_if_ahead(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self._answers_since_close += 1
                if self._answers_since_close >= CLOSE_EVERY and self._ahead(board):
                    message["headers"] = [*message.get("headers", []), CLOSE]
                    self._answers_since_close = 0
                    self._active.pop(client, None)  # this connection ends with this answer
                    board.publish(len(self._active))
            await send(message)

        await self.app(scope, receive, send_closing_if_ahead)

    def _seen(self, client: Any, now: int) -> int:
        """Record a request from ``client``, forget connections idle for ``ACTIVE_S``; the active count."""
        self._active[client] = now
        self._active.move_to_end(client)
        while self._active and now - next(iter(self._active.values())) > ACTIVE_S * 1e9:
            self._active.popitem(last=False)
        return len(self._active)

    def _ahead(self, board: LoadBoard) -> bool:
        mine = len(self._active)
        if mine < SURPLUS:  # cheap exit at low load: no other worker can be that far behind
            return False
        fewest = board.least_loaded_other()
        return fewest is not None and mine - fewest >= SURPLUS
