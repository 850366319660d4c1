"""The paths the service serves, and BentoML's request metrics labelled by them, never by a path a client made up.

BentoML labels its request metrics (``housing_request_total``, ``..._duration_seconds``, ``..._in_progress``)
with the raw request path, in the outermost middleware of its app, before any middleware of ours runs: every
unique unknown path became a new series (1,551 requests to ``/x-<uuid>`` took ``/metrics`` from 46 KB to
4.95 MB and its scrape to 1.2-1.6 s, and the multiprocess files grew until a restart). BentoML offers no
option for it, so :func:`label_unserved_paths` puts a subclass of its metrics middleware in its place (its own
``__call__``, unchanged, after one mapping): a request to a path the service does not serve is handled as a
request to :data:`UNSERVED`, which no route serves, so it answers 404 and counts under that one label. A path
the service does not serve gets no redirect either (Starlette's trailing-slash redirect named the request's
own Host header). tests/service/test_served_paths.py holds :func:`served_path` equal to the routes BentoML
builds, and the label set flat under thousands of unknown paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

from bentoml._internal import server as bentoml_server
from bentoml._internal.server.http import instruments

# What every request to a path the service does not serve is counted (and routed) as.
UNSERVED = "/unserved"
# BentoML's own routes: probes, metrics, the Swagger page and its documents.
SYSTEM_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json"})
# The Swagger page's assets, which BentoML serves as static files.
STATIC_PREFIX = "/static_content/"
STATIC_FILES = frozenset(path.name for path in (Path(bentoml_server.__file__).parent / "static_content").iterdir())


def served_path(api_paths: Iterable[str], mounted_paths: Iterable[str]) -> Callable[[str], bool]:
    """Whether a path is one the service serves: its APIs, BentoML's own routes and the mounted app's routes."""
    exact = frozenset({*api_paths, *mounted_paths, *SYSTEM_PATHS})

    def served(path: str) -> bool:
        return path in exact or (path.startswith(STATIC_PREFIX) and path[len(STATIC_PREFIX) :] in STATIC_FILES)

    return served


class ServedPathMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics, with every path the service does not serve handled as :data:`UNSERVED`."""

    served: ClassVar[Callable[[str], bool]]

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not type(self).served(scope["path"]):
            scope = {**scope, "path": UNSERVED, "raw_path": UNSERVED.encode()}
        await super().__call__(scope, receive, send)


def label_unserved_paths(served: Callable[[str], bool]) -> None:
    """Make the apps BentoML builds from now on use :class:`ServedPathMetrics` for their request metrics.

    BentoML's app factory imports its metrics middleware class from ``instruments`` each time it builds an app.
    """
    ServedPathMetrics.served = staticmethod(served)
    instruments.RunnerTrafficMetricsMiddleware = ServedPathMetrics  # type: ignore[misc]
