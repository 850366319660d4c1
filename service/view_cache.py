"""Answers of the read-only views, reused for a few seconds.

``/drift``, ``/accuracy`` and ``/model/history`` read a window of the log or the
registry; a dashboard that polls them, or a client that loops on them, would
otherwise pay that on every call. One caller computes an answer while the others
for the same key wait for it, so a burst costs one computation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class ViewCache:
    """Values by key, each computed at most once per ``ttl_s`` seconds.

    Parameters
    ----------
    ttl_s : float
        How long a value is reused, in seconds; 0 computes every time.
    max_keys : int
        Most keys kept; the oldest go first (query parameters make keys).
    """

    def __init__(self, ttl_s: float, max_keys: int = 256):
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any], ttl_s: float | None = None) -> Any:
        """The value of ``key``: reused while fresh (``ttl_s``, by default the cache's), else computed by one caller
        at a time."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            found = self._values.get(key)
            if found is not None and time.monotonic() - found[0] < (self.ttl_s if ttl_s is None else ttl_s):
                return found[1]
            value = compute()
            with self._guard:
                self._values[key] = (time.monotonic(), value)
                while len(self._values) > self.max_keys:
                    oldest = next(iter(self._values))
                    self._values.pop(oldest)
                    self._locks.pop(oldest, None)
            return value
