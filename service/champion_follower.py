"""A replica that follows the registry: when ``@champion`` moves in MLflow, serve the new version; when
``@challenger`` moves, price in its shadow.

With ``HOUSING_FOLLOW_CHAMPION`` the first worker of each replica polls the
registry every ``HOUSING_CHAMPION_POLL_S``. When the alias points at a version
the replica does not serve, it imports that version from the registry's
artifact store into the replica's own BentoML store (housing.registry, as the
pipeline does) and asks the replica's workers to switch (housing.log.reloads), which
they do between two requests. The challenger (``housing shadow start``) is followed the same way, as a
reload request of the role ``challenger``, and its end (the alias removed) as one with no model.
The poll is a chore of the worker's model-follower
thread (housing.periodic), beside its reload watcher. A version that cannot be imported or loaded
leaves the old one serving: the error is on the worker's report (``/health``)
and ``housing_champion_follow_failures_total`` counts the attempts; the next poll tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import bentoml

from housing.model_format import ModelLabels
from housing.registry import (
    Names,
    challenger_names,
    challenger_version,
    champion_version,
    served_model,
    shadow_fraction,
)
from service.prometheus_metrics import CHAMPION_FOLLOW_FAILURES

if TYPE_CHECKING:  # MLflow loads with the first poll, in the worker (see housing.model_format)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def labels_of(bento_tag: str) -> ModelLabels:
    """The registry identity of a model in the BentoML store."""
    return ModelLabels.model_validate(bentoml.models.get(bento_tag).info.labels)


@dataclass
class ChampionFollower:
    """Poll the registry's champion and challenger; import and request a switch when the replica does not serve them.

    ``serving`` gives the served bento tag, ``roll_out`` asks the replica's workers to serve a bento tag,
    ``report_error`` puts an error on this worker's report (empty: none). ``asked`` gives the challenger the replica
    was last asked for (bento tag, fraction; housing.log.reloads.asked_challenger), ``ask_challenger`` asks for one
    (a bento tag, "" to end the shadow, and the fraction as a keyword); without them the challenger is not followed.
    """

    tracking_uri: str
    serving: Callable[[], str]
    roll_out: Callable[[str], object]
    report_error: Callable[[str], None]
    asked: Callable[[], tuple[str, float]] | None = None
    ask_challenger: Callable[..., object] | None = None

    _client: MlflowClient | None = field(default=None, init=False, repr=False)

    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def follow(self) -> str | None:
        """One poll: the bento tag a switch was asked for, None when the champion is served (or unreadable).

        The challenger is followed after the champion, its error reported beside the champion's.
        """
        errors: list[str] = []
        asked = None
        try:
            serving = self.serving()
            labels = labels_of(serving)
            reg = Names(labels.mlflow_model, labels.mlflow_alias, serving.partition(":")[0])
            asked = self._follow_champion(reg, labels.mlflow_version)
            self._follow_challenger(reg, errors)
        except Exception as exc:  # the registry or its artifact store is away, or the version is broken
            CHAMPION_FOLLOW_FAILURES.inc()
            log.exception("champion follower: cannot follow the registry's champion")
            errors.insert(0, f"registry champion: {type(exc).__name__}: {exc}")
        self.report_error("; ".join(errors))
        return asked

    def _follow_champion(self, reg: Names, served_version: str) -> str | None:
        champion = champion_version(self.client(), reg)
        if champion is None or str(champion.version) == served_version:
            return None
        bento_model = served_model(self.client(), reg, str(champion.version))
        log.info("champion follower: @%s is v%s; switching to %s", reg.alias, champion.version, bento_model.tag)
        self.roll_out(str(bento_model.tag))
        return str(bento_model.tag)

    def _follow_challenger(self, reg: Names, errors: list[str]) -> None:
        """Ask the replica to price in the shadow of the registry's challenger (or to stop) when it does not yet."""
        if self.asked is None or self.ask_challenger is None:
            return
        try:
            challenger = challenger_version(self.client(), reg)
            tag, fraction = self.asked()
            if challenger is None:
                if tag:
                    log.info("champion follower: @%s is gone; ending the shadow", challenger_names(reg).alias)
                    self.ask_challenger("", fraction=None)
                return
            wanted = (str(challenger.version), shadow_fraction(challenger))
            if tag and (labels_of(tag).mlflow_version, fraction) == wanted:
                return
            bento_model = served_model(self.client(), challenger_names(reg), wanted[0])
            log.info("champion follower: @%s is v%s; pricing in shadow with %s", challenger_names(reg).alias,
                     wanted[0], bento_model.tag)  # fmt: skip
            self.ask_challenger(str(bento_model.tag), fraction=wanted[1])
        except Exception as exc:  # the champion serves on; the next poll tries again
            CHAMPION_FOLLOW_FAILURES.inc()
            log.exception("champion follower: cannot follow the registry's challenger")
            errors.append(f"registry challenger: {type(exc).__name__}: {exc}")
