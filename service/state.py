"""What the service's routers read, handed to them as a typed FastAPI dependency.

Each worker's :class:`~service.service.HousePricer` makes one :class:`ServingState` and puts it on the
mounted app's ``state``; a route asks for it with a parameter annotated :data:`Serving`, as FastAPI's
own apps share a database session or settings, instead of looking the service up at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, cast

from fastapi import Depends, Request

from housing.jobs import JobRunner
from housing.log.queries import LogReader
from housing.log.writer import PredictionLog
from housing.registry import ProjectRegistry, tracking_uri
from housing.settings import settings
from service.model import ServedModel
from service.shadow_scorer import ShadowScorer
from service.view_cache import ViewCache


@dataclass
class ServingState:
    """One worker's state.

    Attributes
    ----------
    model : the served model; a reload swaps it between two requests (each request keeps the one it began with).
    log : the prediction log's writer (rows are handed to it on the request path; feedback is written at once).
    reads : the prediction log's reads.
    views : cached answers of the read-only views.
    jobs : the retraining job runner.
    replica : this worker's replica (a host and its BentoML store).
    started : when the worker started (s since the epoch).
    shadow : the challenger in shadow, if any, and the houses it has yet to price.
    """

    model: ServedModel
    log: PredictionLog
    reads: LogReader
    views: ViewCache
    jobs: JobRunner
    replica: str
    started: float
    shadow: ShadowScorer

    @staticmethod
    def registry() -> ProjectRegistry:
        """The registry of the service's DVC project (``HOUSING_PROJECT_DIR``); raises
        housing.registry.NoProjectError where the service runs without its project (an image)."""
        project_dir = settings().project_dir.resolve()
        return _registry(project_dir, tracking_uri(project_dir))


@lru_cache(maxsize=4)
def _registry(project_dir: Path, uri: str) -> ProjectRegistry:
    """One registry per project and store, kept for the worker's life (its client costs about 2 s to make)."""
    return ProjectRegistry(project_dir)


def serving_state(request: Request) -> ServingState:
    """The worker's state, which its HousePricer put on the app when it started."""
    return cast(ServingState, request.app.state.serving)


Serving = Annotated[ServingState, Depends(serving_state)]
