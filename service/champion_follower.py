"""A replica that follows the registry: when ``@champion`` moves in MLflow, serve the new version.

With ``HOUSING_FOLLOW_CHAMPION`` the first worker of each replica polls the
registry every ``HOUSING_CHAMPION_POLL_S``. When the alias points at a version
the replica does not serve, it imports that version from the registry's
artifact store into the replica's own BentoML store (housing.registry, as the
pipeline does) and asks the replica's workers to switch (housing.log.reloads), which
they do between two requests. The poll is a chore of the worker's model-follower
thread (housing.periodic), beside its reload watcher. A version that cannot be imported or loaded
leaves the old one serving: the error is on the worker's report (``/health``)
and ``housing_champion_follow_failures_total`` counts the attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import bentoml

from housing.model_format import ModelLabels
from housing.registry import champion_version, served_model
from service.prometheus_metrics import CHAMPION_FOLLOW_FAILURES

if TYPE_CHECKING:  # MLflow loads with the first poll, in the worker (see housing.model_format)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    """The registered model a served BentoML model came from (housing.registry.RegisteredModel)."""

    model_name: str
    alias: str
    bento_model_name: str


def labels_of(bento_tag: str) -> ModelLabels:
    """The registry identity of a model in the BentoML store."""
    return ModelLabels.model_validate(bentoml.models.get(bento_tag).info.labels)


@dataclass
class ChampionFollower:
    """Poll the registry's champion; import and request a switch when it is not the served version.

    ``serving`` gives the served bento tag, ``roll_out`` asks the replica's workers to serve a bento tag,
    ``report_error`` puts an error on this worker's report (empty: none).
    """

    tracking_uri: str
    serving: Callable[[], str]
    roll_out: Callable[[str], object]
    report_error: Callable[[str], None]

    _client: MlflowClient | None = field(default=None, init=False, repr=False)

    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def follow(self) -> str | None:
        """One poll: the bento tag a switch was asked for, None when the champion is served (or unreadable)."""
        try:
            serving = self.serving()
            labels = labels_of(serving)
            reg = Registered(labels.mlflow_model, labels.mlflow_alias, serving.partition(":")[0])
            champion = champion_version(self.client(), reg)
            if champion is None or str(champion.version) == labels.mlflow_version:
                self.report_error("")
                return None
            bento_model = served_model(self.client(), reg, str(champion.version))
            log.info("champion follower: @%s is v%s; switching to %s", reg.alias, champion.version, bento_model.tag)
            self.roll_out(str(bento_model.tag))
            return str(bento_model.tag)
        except Exception as exc:  # the registry or its artifact store is away, or the version is broken
            CHAMPION_FOLLOW_FAILURES.inc()
            log.exception("champion follower: cannot follow the registry's champion")
            self.report_error(f"registry champion: {type(exc).__name__}: {exc}")
            return None
