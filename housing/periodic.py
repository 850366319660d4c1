"""One background thread that runs a worker's periodic chores, each at its own interval.

A worker follows reload requests every second and, on a replica that follows the registry, polls the
champion every ten: two chores of one "model-follower" thread rather than a thread each, since neither
is urgent and both end in the same switch between two requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Periodic:
    """Run each ``(interval_s, chore)`` every ``interval_s`` seconds (the first after one interval) on one thread.

    A chore that raises is logged and run again at its next turn: the thread outlives a database or a
    registry that is away for a while. A slow chore delays the others by as long as it takes.
    """

    def __init__(self, name: str, chores: Sequence[tuple[float, Callable[[], object]]]) -> None:
        if not chores:
            raise ValueError("chores: give at least one (interval_s, chore)")
        self.chores = list(chores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop, waiting for a chore in progress: what it uses (the log's store) may be closed next."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        start = time.monotonic()
        due = [start + interval for interval, _ in self.chores]
        while not self._stop.wait(max(0.0, min(due) - time.monotonic())):
            for i, (interval, chore) in enumerate(self.chores):
                if time.monotonic() >= due[i]:
                    try:
                        chore()
                    except Exception:  # see the class docstring
                        log.exception("%s: %s failed", self._thread.name, getattr(chore, "__qualname__", chore))
                    due[i] = time.monotonic() + interval
