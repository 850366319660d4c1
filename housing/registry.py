"""The model registry, its one owner: where MLflow's store is, the champion and the challenger, every decision, the
history, rollback, the challenger in shadow, and importing a version into a BentoML store.

Every change of champion (a promotion, a rollback) and every refusal is recorded as a run of the decisions experiment
(``register.decisions_experiment`` in params.yaml), tagged with the versions, the reason and the trigger, with the
metrics before and after: the history is queryable from MLflow alone. The BentoML store follows the registry: after
each change the champion is the store's latest model, which a starting (or reloading) service picks up, and a replica
that follows the champion (``HOUSING_FOLLOW_CHAMPION``) imports it the same way into its own store.

The pipeline promotes (training.register); the service (``GET /model/history``, ``POST /admin/rollback``) and the
CLI (``housing history``, ``housing rollback``) read the history and roll back through :class:`ProjectRegistry`.
MLflow is imported where it is used (about 1 s): see housing.model_format.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import bentoml
from bentoml.exceptions import NotFound

from housing.columns import FEATURE_COLUMNS
from housing.model_card import with_section
from housing.model_format import PROFILE_TAG, ModelLabels, ModelMetadata
from housing.params import RegisterParams, load_params

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

Action = Literal["promote", "reject", "rollback"]
# The alias of the version that prices live requests in shadow (housing.shadow), the suffix of its name in a BentoML
# store (so that the champion's name keeps the champion as its latest model), and the tag holding the share of
# requests it prices.
CHALLENGER_ALIAS = "challenger"
CHALLENGER_SUFFIX = "-challenger"
FRACTION_TAG = "shadow_fraction"


class RegisteredModel(Protocol):
    """What names a registered model: its MLflow name, the champion's alias, its name in the BentoML store
    (``register`` in params.yaml, housing.params.RegisterParams, is one)."""

    @property
    def model_name(self) -> str: ...

    @property
    def alias(self) -> str: ...

    @property
    def bento_model_name(self) -> str: ...


@dataclass(frozen=True)
class Names:
    """A :class:`RegisteredModel` by value: a served model's labels name one, and so does the challenger."""

    model_name: str
    alias: str
    bento_model_name: str


def challenger_names(reg: RegisteredModel) -> Names:
    """The challenger's names: the same registered model, its alias, and a BentoML name of its own."""
    return Names(reg.model_name, CHALLENGER_ALIAS, reg.bento_model_name + CHALLENGER_SUFFIX)


# -- where the registry is, and who is champion ----------------------------------


def tracking_uri(project_dir: Path) -> str:
    """MLflow's store: ``MLFLOW_TRACKING_URI`` (a tracking server, for shared stores), else the project's
    own ``mlflow.db`` (where the pipeline run in ``project_dir`` keeps it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_dir / 'mlflow.db').resolve()}"


def store_exists(uri: str) -> bool:
    """Whether the store at ``uri`` exists: for a SQLite file, the file; a server is taken to exist.

    Readers check first because opening a SQLite store that is not there creates and migrates it, which
    only the pipeline should do (two readers migrating one new file at once can leave it half-migrated).
    """
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def champion_version(client: MlflowClient, reg: RegisteredModel) -> ModelVersion | None:
    """The version the ``@champion`` alias points at, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(reg.model_name, reg.alias)
    except MlflowException:
        return None


def pin_model(model_uri: str, project_dir: Path) -> tuple[str, str]:
    """Point MLflow at the project's store (:func:`tracking_uri`) and pin ``model_uri`` to what it names now.

    A ``models:/`` URI (``@alias``, ``/version``, ``/stage``) becomes ``models:/<name>/<version>`` and its version,
    so a job that loads the model more than once (or on other machines: Spark's executors) loads one version even if
    the alias moves meanwhile. Any other URI (``runs:/…``, a path) names no registered version: it is kept, with
    an empty version.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    mlflow.set_tracking_uri(tracking_uri(project_dir))
    if not model_uri.startswith("models:/"):
        return model_uri, ""
    name, version = get_model_name_and_version(MlflowClient(), model_uri)  # type: ignore[no-untyped-call]  # MLflow leaves it untyped
    return f"models:/{name}/{version}", str(version)


def tagged_metrics(version: ModelVersion, prefix: str = "test_") -> dict[str, float]:
    """The metrics register.py tagged the version with, e.g. ``test_rmse`` -> ``{"rmse": ...}``."""
    return {key.removeprefix(prefix): float(value) for key, value in version.tags.items() if key.startswith(prefix)}


# -- the BentoML copy ----------------------------------------------------------------


def import_version(client: MlflowClient, reg: RegisteredModel, version: str) -> bentoml.Model:
    """Copy a registered version (from ``client``'s registry and artifact store) into the BentoML store,
    labelled with its MLflow identity.

    The import is always a new BentoML model, so the champion is the store's ``latest`` even when an older
    version comes back by rollback. The version is downloaded through ``client``'s store, not by its
    ``models:/`` URI, which MLflow resolves through the process-wide registry whatever registry it is given.
    """
    from mlflow.artifacts import download_artifacts

    mv = client.get_model_version(reg.model_name, version)
    where = client.get_model_version_download_uri(reg.model_name, version)
    with tempfile.TemporaryDirectory(prefix="housing-import-") as staging:
        local = download_artifacts(artifact_uri=where, dst_path=staging, tracking_uri=client.tracking_uri)
        model: bentoml.Model = bentoml.mlflow.import_model(
            reg.bento_model_name,
            model_uri=local,
            labels=ModelLabels(
                mlflow_model=reg.model_name,
                mlflow_version=version,
                mlflow_alias=reg.alias,
                family=mv.tags.get("family", ""),
            ).model_dump(),
            metadata=ModelMetadata(
                mlflow_model=reg.model_name,
                mlflow_version=version,
                mlflow_run_id=str(mv.run_id),
                tracking_uri=client.tracking_uri,
                data_version=mv.tags.get("data_version", ""),
                test_metrics=tagged_metrics(mv),
                cv_metrics=tagged_metrics(mv, "cv_"),
                feature_columns=list(FEATURE_COLUMNS),
                reference_profile=mv.tags[PROFILE_TAG],
            ).model_dump(),
        )
    return model


def latest_model(reg: RegisteredModel) -> bentoml.Model | None:
    """The BentoML store's latest model of the name; None in a store that never held it."""
    try:
        return bentoml.models.get(f"{reg.bento_model_name}:latest")
    except NotFound:
        return None


def holds(model: bentoml.Model, mv: ModelVersion) -> bool:
    """Whether ``model`` is the registered version ``mv``: its number and its run (every registry has a version 1:
    a store that served another registry's would pass for this one's on the number alone)."""
    return (model.info.labels.get("mlflow_version") == str(mv.version)
            and model.info.metadata.get("mlflow_run_id") == str(mv.run_id))  # fmt: skip


def is_served(client: MlflowClient, reg: RegisteredModel, version: str) -> bool:
    """Whether the BentoML store's latest model is the registered ``version`` (see :func:`holds`)."""
    latest = latest_model(reg)
    return latest is not None and holds(latest, client.get_model_version(reg.model_name, version))


def served_model(client: MlflowClient, reg: RegisteredModel, version: str) -> bentoml.Model:
    """The BentoML store's latest model, made to be ``version`` (imported when it is not)."""
    latest, mv = latest_model(reg), client.get_model_version(reg.model_name, version)
    if latest is not None and holds(latest, mv):
        return latest
    return import_version(client, reg, version)


# -- decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One registry decision: what happened to ``version`` and why."""

    action: Action
    version: str | None
    reason: str
    champion_before: str | None
    champion_after: str | None
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    trigger: str = ""
    ts: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(client: MlflowClient, reg: RegisterParams, decision: Decision) -> Decision:
    """Write the decision as a run of the decisions experiment and tag the version with it."""
    experiment = client.get_experiment_by_name(reg.decisions_experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(reg.decisions_experiment)
    tags = {
        "kind": "decision",
        "action": decision.action,
        "model_version": decision.version or "",
        "champion_before": decision.champion_before or "",
        "champion_after": decision.champion_after or "",
        "reason": decision.reason,
        "trigger": decision.trigger,
        "mlflow.runName": f"{decision.action} v{decision.version or '-'}",
    }
    run = client.create_run(experiment_id, start_time=int(decision.ts * 1000), tags=tags)
    for stage, values in (("before", decision.metrics_before), ("after", decision.metrics_after)):
        for name, value in values.items():
            client.log_metric(run.info.run_id, f"{name}_{stage}", value, timestamp=int(decision.ts * 1000))
    client.set_terminated(run.info.run_id)
    if decision.version:
        client.set_model_version_tag(reg.model_name, decision.version, "decision", decision.action)
        client.set_model_version_tag(reg.model_name, decision.version, "decision_reason", decision.reason)
    log.info("%s v%s: %s", decision.action, decision.version, decision.reason)
    return decision


def history(client: MlflowClient, reg: RegisterParams, limit: int = 100) -> list[dict[str, Any]]:
    """Every recorded decision, newest first: action, versions, reason, trigger, metrics before/after."""
    experiment = client.get_experiment_by_name(reg.decisions_experiment)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], "tags.kind = 'decision'", order_by=["attributes.start_time DESC"], max_results=limit
    )
    return [
        {
            "ts": run.info.start_time / 1000,
            "action": run.data.tags["action"],
            "version": run.data.tags["model_version"] or None,
            "champion_before": run.data.tags["champion_before"] or None,
            "champion_after": run.data.tags["champion_after"] or None,
            "reason": run.data.tags["reason"],
            "trigger": run.data.tags.get("trigger", ""),
            "metrics_before": _suffixed(run.data.metrics, "_before"),
            "metrics_after": _suffixed(run.data.metrics, "_after"),
            "run_id": run.info.run_id,
        }
        for run in runs
    ]


def _suffixed(values: dict[str, float], suffix: str) -> dict[str, float]:
    return {key.removesuffix(suffix): value for key, value in values.items() if key.endswith(suffix)}


def crown(client: MlflowClient, reg: RegisterParams, decision: Decision) -> bentoml.Model:
    """Point ``@champion`` at the decision's version, import it into BentoML and record why."""
    version = decision.champion_after
    if version is None:
        raise ValueError(f"a {decision.action} decision names no new champion")
    client.set_registered_model_alias(reg.model_name, reg.alias, version)
    bento_model = import_version(client, reg, version)
    record(client, reg, decision)
    return bento_model


# -- rollback ----------------------------------------------------------------------------


def rollback_target(client: MlflowClient, reg: RegisterParams) -> str:
    """The version that was champion before the current one was last promoted."""
    current = champion_version(client, reg)
    if current is None:
        raise LookupError(f"{reg.model_name} has no @{reg.alias}: nothing to roll back")
    for entry in history(client, reg, limit=1000):
        if entry["action"] == "promote" and entry["champion_after"] == str(current.version):
            if entry["champion_before"]:
                return str(entry["champion_before"])
            break
    raise LookupError(f"version {current.version!s} was the first champion: there is no earlier one to roll back to")


def rollback(
    client: MlflowClient, reg: RegisterParams, to: str | None = None, reason: str = "", trigger: str = "manual"
) -> tuple[Decision, bentoml.Model]:
    """Move ``@champion`` back (to the previous champion, or to version ``to``), record it and import it into the
    BentoML store; the decision and the store's new latest model.

    Raises ``LookupError`` when there is nothing to roll back to, and MLflow's error for an unknown version.
    """
    current = champion_version(client, reg)
    target = to or rollback_target(client, reg)
    restored = client.get_model_version(reg.model_name, target)  # raises for an unknown version
    if current is not None and str(current.version) == str(restored.version):
        raise LookupError(f"version {target} is already @{reg.alias}")
    decision = Decision(
        action="rollback",
        version=str(restored.version),
        reason=reason or f"rolled back from v{str(current.version) if current else '-'} to v{restored.version!s}",
        champion_before=str(current.version) if current else None,
        champion_after=str(restored.version),
        metrics_before=tagged_metrics(current) if current else {},
        metrics_after=tagged_metrics(restored),
        trigger=trigger,
    )
    return decision, crown(client, reg, decision)


# -- the challenger in shadow ------------------------------------------------------------


def challenger_version(client: MlflowClient, reg: RegisteredModel) -> ModelVersion | None:
    """The version ``@challenger`` points at: the one in shadow; None when none is."""
    return champion_version(client, challenger_names(reg))


def shadow_fraction(version: ModelVersion) -> float:
    """The share of requests the challenger ``version`` prices in shadow (all, unless its start said otherwise)."""
    return float(version.tags.get(FRACTION_TAG, 1.0))


def start_shadow(client: MlflowClient, reg: RegisteredModel, version: str, fraction: float = 1.0) -> bentoml.Model:
    """Make ``version`` the challenger that prices ``fraction`` of the requests in shadow; its BentoML model.

    It is imported into the BentoML store under the challenger's name first (a version that cannot be is refused
    before the alias moves); replicas that follow the registry import it the same way. Raises ``ValueError`` for a
    fraction outside (0, 1], MLflow's error for an unknown version.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: a share of requests in (0, 1], got {fraction}")
    mv = client.get_model_version(reg.model_name, version)  # raises for an unknown version
    bento_model = served_model(client, challenger_names(reg), str(mv.version))
    client.set_model_version_tag(reg.model_name, str(mv.version), FRACTION_TAG, f"{fraction:g}")
    client.set_registered_model_alias(reg.model_name, CHALLENGER_ALIAS, str(mv.version))
    return bento_model


def stop_shadow(client: MlflowClient, reg: RegisteredModel) -> str | None:
    """End the shadow: ``@challenger`` removed; the version it named, None when no shadow ran."""
    current = challenger_version(client, reg)
    if current is None:
        return None
    client.delete_registered_model_alias(reg.model_name, CHALLENGER_ALIAS)
    return str(current.version)


@dataclass(frozen=True)
class ShadowVerdict:
    """What a shadow proved: whether the challenger takes over, why, both models' figures on the same live houses
    (``champion``: metrics before, ``challenger``: after) and the model card's section that reports them."""

    promote: bool
    reason: str
    champion: dict[str, float]
    challenger: dict[str, float]
    card_section: str


def settle_shadow(
    client: MlflowClient, reg: RegisterParams, verdict: ShadowVerdict, trigger: str = "shadow"
) -> tuple[Decision, bentoml.Model | None]:
    """Promote the challenger (``@champion`` moves, ``@challenger`` goes) or refuse to, as ``verdict`` says; either way
    the decision is recorded with the shadow's figures, and the challenger's model card (its description) gains the
    shadow's section. The decision, and the new champion's BentoML model when it was promoted.

    Raises ``LookupError`` when no challenger is in shadow.
    """
    challenger = challenger_version(client, reg)
    if challenger is None:
        raise LookupError(f"{reg.model_name} has no @{CHALLENGER_ALIAS}: no shadow to settle")
    champion = champion_version(client, reg)
    version, before = str(challenger.version), None if champion is None else str(champion.version)
    decision = Decision(
        action="promote" if verdict.promote else "reject",
        version=version,
        reason=f"shadow: {verdict.reason}",
        champion_before=before,
        champion_after=version if verdict.promote else before,
        metrics_before=verdict.champion,
        metrics_after=verdict.challenger,
        trigger=trigger,
    )
    bento_model = None
    if verdict.promote:
        bento_model = crown(client, reg, decision)
        client.delete_registered_model_alias(reg.model_name, CHALLENGER_ALIAS)
    else:
        record(client, reg, decision)
    described = client.get_model_version(reg.model_name, version).description or ""
    client.update_model_version(reg.model_name, version, description=with_section(described, verdict.card_section))
    return decision, bento_model


# -- one project's registry, as the service and the CLI reach it ---------------------------


class NoProjectError(LookupError):
    """The directory holds no DVC project (params.yaml): there is no registry to name."""


class NoRegistryError(LookupError):
    """The project's registry does not exist yet: the pipeline makes it."""


@dataclass
class ProjectRegistry:
    """The registry of the DVC project in ``project_dir``: its names from params.yaml, one MLflow client, and a
    bound on the calls at once (registry reads take hundreds of ms; a rollback moves the champion).

    Raises :class:`NoProjectError` where the directory has no params.yaml (an image without the project),
    and :class:`NoRegistryError` before the pipeline made the store: a reader never makes it.
    """

    project_dir: Path
    max_reads: int = 2
    _reads: threading.BoundedSemaphore = field(init=False, repr=False)
    _changes: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._reads = threading.BoundedSemaphore(self.max_reads)
        if not (self.project_dir / "params.yaml").is_file():
            raise NoProjectError(f"no DVC project (params.yaml) in {self.project_dir}")

    @cached_property
    def names(self) -> RegisterParams:
        return load_params(self.project_dir / "params.yaml").register_

    @cached_property
    def uri(self) -> str:
        return tracking_uri(self.project_dir)

    def client(self) -> MlflowClient:
        """The client of the project's store (made once: making one and its database engine costs about 2 s)."""
        if not store_exists(self.uri):
            raise NoRegistryError("no model registry yet: run the pipeline (make pipeline) first")
        return self._client

    @cached_property
    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Every decision, newest first (at most ``max_reads`` reads at once; more wait their turn)."""
        with self._reads:
            return history(self.client(), self.names, limit)

    def rollback(self, to: str | None = None, reason: str = "", trigger: str = "manual") -> tuple[Decision, str]:
        """:func:`rollback`, one at a time; the decision and the bento tag of the restored champion."""
        with self._changes:
            decision, bento_model = rollback(self.client(), self.names, to, reason, trigger)
        return decision, str(bento_model.tag)

    def shadow(self) -> dict[str, Any]:
        """The champion's version, the challenger's and the share of requests it prices (None where there is none)."""
        with self._reads:
            champion, challenger = (
                champion_version(self.client(), self.names),
                challenger_version(self._client, self.names),
            )
        return {"champion": None if champion is None else str(champion.version),
                "challenger": None if challenger is None else str(challenger.version),
                "fraction": None if challenger is None else shadow_fraction(challenger)}  # fmt: skip

    def start_shadow(self, version: str, fraction: float = 1.0) -> str:
        """:func:`start_shadow`, one change at a time; the challenger's bento tag."""
        with self._changes:
            return str(start_shadow(self.client(), self.names, version, fraction).tag)

    def stop_shadow(self) -> str | None:
        """:func:`stop_shadow`, one change at a time."""
        with self._changes:
            return stop_shadow(self.client(), self.names)

    def settle_shadow(self, verdict: ShadowVerdict, trigger: str = "shadow") -> tuple[Decision, str | None]:
        """:func:`settle_shadow`, one change at a time; the decision and the new champion's bento tag (if promoted)."""
        with self._changes:
            decision, bento_model = settle_shadow(self.client(), self.names, verdict, trigger)
        return decision, None if bento_model is None else str(bento_model.tag)
