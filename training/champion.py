"""The model registry's decisions: which version is ``@champion``, why, and what the service serves.

Every change of champion (a promotion, and a rollback) and every refusal is
recorded as a run of the decisions experiment, tagged with the versions, the
reason and the metrics before and after, so the history is queryable from
MLflow alone. The BentoML store follows the registry: after each change the
champion is the store's latest model, which is what a starting (or reloading)
service picks up.
"""

from __future__ import annotations

import logging

import bentoml
import mlflow
from bentoml.exceptions import NotFound
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from housing.columns import FEATURE_COLUMNS
from housing.decisions import Decision, history, record
from housing.model_format import PROFILE_TAG, ModelLabels, ModelMetadata
from housing.params import RegisterParams
from housing.settings import HousingSettings

log = logging.getLogger(__name__)


def champion_version(client: MlflowClient, reg: RegisterParams) -> ModelVersion | None:
    """The version the ``@champion`` alias points at, or None before the first promotion."""
    try:
        return client.get_model_version_by_alias(reg.model_name, reg.alias)
    except mlflow.exceptions.MlflowException:
        return None


def tagged_metrics(version: ModelVersion, prefix: str = "test_") -> dict[str, float]:
    """The metrics register.py tagged the version with, e.g. ``test_rmse`` -> ``{"rmse": ...}``."""
    return {key.removeprefix(prefix): float(value) for key, value in version.tags.items() if key.startswith(prefix)}


def import_version(client: MlflowClient, reg: RegisterParams, version: str) -> bentoml.Model:
    """Copy a registered version into the BentoML store, labelled with its MLflow identity.

    The import is always a new BentoML model, so the champion is the store's
    ``latest`` even when an older version comes back by rollback.
    """
    mv = client.get_model_version(reg.model_name, version)
    return bentoml.mlflow.import_model(
        reg.bento_model_name,
        model_uri=f"models:/{reg.model_name}/{version}",
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
            tracking_uri=mlflow.get_tracking_uri(),
            data_version=mv.tags.get("data_version", ""),
            test_metrics=tagged_metrics(mv),
            cv_metrics=tagged_metrics(mv, "cv_"),
            feature_columns=list(FEATURE_COLUMNS),
            reference_profile=mv.tags[PROFILE_TAG],
        ).model_dump(),
    )


def served_model(client: MlflowClient, reg: RegisterParams, version: str) -> bentoml.Model:
    """The BentoML store's latest model, made to be ``version`` (imported when it is not)."""
    latest = _latest(reg)
    if latest is not None and latest.info.labels.get("mlflow_version") == version:
        return latest
    return import_version(client, reg, version)


def is_served(reg: RegisterParams, version: str) -> bool:
    """Whether the BentoML store's latest model is ``version``."""
    latest = _latest(reg)
    return latest is not None and latest.info.labels.get("mlflow_version") == version


def _latest(reg: RegisterParams) -> bentoml.Model | None:
    """The BentoML store's latest model of the name; None in a store that never held it."""
    try:
        return bentoml.models.get(f"{reg.bento_model_name}:latest")
    except NotFound:
        return None


def crown(client: MlflowClient, reg: RegisterParams, decision: Decision) -> bentoml.Model:
    """Point ``@champion`` at the decision's version, import it into BentoML and record why."""
    version = decision.champion_after
    if version is None:
        raise ValueError(f"a {decision.action} decision names no new champion")
    client.set_registered_model_alias(reg.model_name, reg.alias, version)
    bento_model = import_version(client, reg, version)
    record(client, reg, decision)
    return bento_model


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


def rollback(client: MlflowClient, reg: RegisterParams, to: str | None = None, reason: str = "") -> Decision:
    """Move ``@champion`` back (to the previous champion, or to version ``to``) and record it."""
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
        trigger=HousingSettings().retrain_reason or "manual",
    )
    crown(client, reg, decision)
    return decision
