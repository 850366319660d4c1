"""The model registry's decisions: which version is ``@champion``, why, and what the service serves.

Every change of champion (a promotion, and a rollback) and every refusal is
recorded as a run of the decisions experiment, tagged with the versions, the
reason and the metrics before and after, so the history is queryable from
MLflow alone. The BentoML store follows the registry: after each change the
champion is the store's latest model, which is what a starting (or reloading)
service picks up. Reading the registry and importing a version are housing.registry's, which a
replica that follows the champion uses too.
"""

from __future__ import annotations

import logging

import bentoml
from mlflow import MlflowClient

from housing.decisions import Decision, history, record
from housing.params import RegisterParams
from housing.registry import champion_version, import_version, tagged_metrics
from housing.settings import HousingSettings

log = logging.getLogger(__name__)


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
