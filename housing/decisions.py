"""The registry's decisions: every promotion, refusal and rollback, recorded in MLflow and read back.

Each decision is a run of the decisions experiment (``register.decisions_experiment``
in params.yaml), tagged with the versions, the reason and the trigger, with the
metrics before and after: the history is queryable from MLflow alone. The
pipeline records decisions (training.register, training.champion); the service
and the CLI read them (``GET /model/history``, ``housing history``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from housing.params import RegisterParams

if TYPE_CHECKING:  # the caller's client brings MLflow (see housing.model_format)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

Action = Literal["promote", "reject", "rollback"]


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
    out = []
    for run in runs:
        tags, values = run.data.tags, run.data.metrics
        out.append(
            {
                "ts": run.info.start_time / 1000,
                "action": tags["action"],
                "version": tags["model_version"] or None,
                "champion_before": tags["champion_before"] or None,
                "champion_after": tags["champion_after"] or None,
                "reason": tags["reason"],
                "trigger": tags.get("trigger", ""),
                "metrics_before": _suffixed(values, "_before"),
                "metrics_after": _suffixed(values, "_after"),
                "run_id": run.info.run_id,
            }
        )
    return out


def _suffixed(values: dict[str, float], suffix: str) -> dict[str, float]:
    return {key.removesuffix(suffix): value for key, value in values.items() if key.endswith(suffix)}
