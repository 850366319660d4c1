"""The read-only views of the service: the model, its health, drift, accuracy, traffic and the dashboard.

Each reads the worker's state (service.state) and the log's read API (housing.log.queries); none costs
more as the log grows: /stats reads per-minute totals, /drift reads the latest window, and /drift and
/accuracy answers are reused for a few seconds (service.view_cache) while no new prediction or feedback
came in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from housing.columns import FEATURE_COLUMNS
from housing.drift_check import check_drift
from housing.explain import mean_abs_contribution, top_contributions
from housing.log.queries import accuracy_of
from housing.log.reloads import live_workers
from housing.model_card import ModelCard
from housing.settings import settings
from service import prometheus_metrics
from service.api_models import Health, ModelInfo
from service.model import ServedModel, not_explainable
from service.state import Serving

# The longest a time bucket of /accuracy may be, and the latest time it takes (year 2286).
MAX_BUCKET_S = 366 * 24 * 3600.0
MAX_TS = 1e10
# The most recent predictions /explain/recent explains at once, and the reasons it gives for each.
MAX_EXPLAINED = 100
TOP_REASONS = 3
# The global importance's sample (the latest priced houses) and how often it is recomputed.
IMPORTANCE_HOUSES = 200
IMPORTANCE_REFRESH_S = 60.0
DASHBOARD_HTML = (Path(__file__).parent / "static" / "dashboard.html").read_text()

views = APIRouter(tags=["views"])


@views.get("/model", response_model=ModelInfo)
def model_info(state: Serving) -> ModelInfo:
    """Registered name, version, run id, training metrics, feature schema and data version."""
    return state.model.info


@views.get("/model/card", response_model=ModelCard)
def model_card(
    state: Serving,
    format: Literal["json", "markdown"] = Query(default="json", description="`markdown` for the readable card."),
) -> ModelCard | PlainTextResponse:
    """The served version's model card (Mitchell et al. 2019): use, data, metrics per slice, coverage, limits."""
    model = state.model
    if model.card is None:
        raise HTTPException(404, f"model: version {model.info.model_version} was registered without a model card")
    if format == "markdown":
        return PlainTextResponse(model.card.to_markdown(), media_type="text/markdown; charset=utf-8")
    return cast(ModelCard, model.card)


@views.get("/drift")
def drift(state: Serving) -> dict[str, Any]:
    """Drift of the latest priced houses against the training data, per feature (also on /metrics)."""
    model = state.model
    return cast(
        dict[str, Any],
        state.views.get(
            ("drift", model.info.bento_tag, state.reads.newest()[0]), lambda: check_drift(model.reference, state.reads)
        ),
    )


@views.get("/accuracy")
def accuracy(
    state: Serving,
    bucket_s: float | None = Query(
        default=None,
        ge=1,
        le=MAX_BUCKET_S,
        allow_inf_nan=False,
        description="Split into time buckets of this many seconds (houses count by the minute they were priced in).",
        examples=[3600.0],
    ),
    since_ts: float = Query(
        default=0.0,
        ge=0,
        le=MAX_TS,
        allow_inf_nan=False,
        description="Only predictions made from this Unix time on, to the minute.",
    ),
) -> dict[str, Any]:
    """MAE and RMSE (USD), and interval coverage, against received feedback, per model version; with ``bucket_s``,
    over time."""
    # The log is read once per new feedback; the parameters only pick and add up what was read.
    reads = state.reads
    minutes = state.views.get(("accuracy", reads.newest()[1]), reads.accuracy_minutes)
    rows = accuracy_of(minutes, since_ts, bucket_s)
    if bucket_s is None:
        for row in rows:
            prometheus_metrics.ACCURACY.labels("mae", row["model_version"]).set(row["mae"])
            prometheus_metrics.ACCURACY.labels("rmse", row["model_version"]).set(row["rmse"])
            prometheus_metrics.FEEDBACK_COUNT.labels(row["model_version"]).set(row["n"])
            if row["coverage"] is not None:
                prometheus_metrics.INTERVAL_COVERAGE.labels(row["model_version"]).set(row["coverage"])
                prometheus_metrics.INTERVAL_FEEDBACK.labels(row["model_version"]).set(row["n_interval"])
    return {"bucket_s": bucket_s, "since_ts": since_ts, "accuracy": rows}


@views.get("/stats")
def stats(state: Serving) -> dict[str, Any]:
    """Traffic per minute (last hour) and per hour (last day) with request latency, and the latest predictions.

    Request ids are cut short: they are the keys of feedback.
    """
    reads, now = state.reads, time.time()
    return {"per_minute": reads.traffic(now, 60, 60), "per_hour": reads.traffic(now, 3600, 24),
            "recent": reads.recent(20)}  # fmt: skip


@views.get("/explain/recent")
def explain_recent(
    state: Serving,
    limit: int = Query(default=10, ge=1, le=MAX_EXPLAINED, description="How many of the latest predictions."),
) -> dict[str, Any]:
    """The top reasons for the latest predictions: each one's largest input contributions (USD), newest first.

    The served model explains the logged inputs (see ``POST /explain``); after a model change its price may
    differ from the logged one. 409 when the served model is not a LightGBM forest.
    """
    model, reads = _explainable(state.model), state.reads
    # The latest MAX_EXPLAINED are explained at most once per view_cache_s; ``limit`` only slices them.
    latest = state.views.get(
        ("explain_recent", model.info.bento_tag), lambda: _recent_reasons(model, reads.recent(MAX_EXPLAINED))
    )
    return {**latest, "predictions": latest["predictions"][:limit]}


@views.get("/explain/importance")
def explain_importance(state: Serving) -> dict[str, Any]:
    """The model's global importance: each raw input's mean absolute contribution (USD) over the latest
    ``IMPORTANCE_HOUSES`` priced houses, recomputed at most every ``IMPORTANCE_REFRESH_S`` seconds (an exact
    explanation of a large forest costs milliseconds a house). 409 when the served model is not a LightGBM forest.
    """
    model, reads = _explainable(state.model), state.reads
    return cast(
        dict[str, Any],
        state.views.get(
            ("explain_importance", model.info.bento_tag),
            lambda: _importance(model, reads.recent_inputs(IMPORTANCE_HOUSES)),
            ttl_s=IMPORTANCE_REFRESH_S,
        ),
    )


def _explainable(model: ServedModel) -> ServedModel:
    """``model``, or 409 when it cannot explain its prices (checked before any cached answer is reused)."""
    if model.forest is None:
        raise HTTPException(status_code=409, detail=not_explainable(model))
    return model


def _recent_reasons(model: ServedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    answer: dict[str, Any] = {**model.identity(), "predictions": []}
    if not rows:
        return answer
    explanation = model.explain({name: [row[name] for row in rows] for name in FEATURE_COLUMNS})
    for i, row in enumerate(rows):
        answer["predictions"].append({
            "request_id": row["request_id"], "idx": row["idx"], "ts": row["ts"],
            "logged_model_version": row["model_version"], "price_usd": float(explanation.price_usd[i]),
            "base_usd": float(explanation.base_usd[i]),
            "top": top_contributions(explanation.contributions_usd[i], explanation.inputs, TOP_REASONS),
        })  # fmt: skip
    return answer


def _importance(model: ServedModel, columns: dict[str, list[Any]]) -> dict[str, Any]:
    houses = len(columns[FEATURE_COLUMNS[0]])
    contributions = model.explain(columns).contributions_usd if houses else np.empty((0, len(FEATURE_COLUMNS)))
    importance = mean_abs_contribution(contributions, FEATURE_COLUMNS)
    return {**model.identity(), "houses": houses, "computed_at": time.time(), "mean_abs_contribution_usd": importance}


@views.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> str:
    """A live page: traffic, latency, drift, accuracy, recent predictions with their top reasons, the model's
    global importance and the current model."""
    return DASHBOARD_HTML


@views.get("/health", response_model=Health)
def health(state: Serving) -> Health:
    """A one-look summary: model, uptime, the prediction log's backlog and the challenger in shadow."""
    model, log = state.model, state.log
    # Any worker of the replica that could not load a model (a reload, or the registry's champion) says so.
    workers = live_workers(log.store, state.replica, settings().worker_max_age_s)
    errors = sorted({worker["error"] for worker in workers if worker["error"]})
    shadow = state.shadow
    healthy = (log.write_failures == log.dead_letters == log.dropped == 0 and not errors and log.problem is None
               and shadow.problem is None)  # fmt: skip
    return Health(
        status="ok" if healthy else "degraded",
        model_errors=errors,
        model_name=model.info.model_name,
        model_version=model.info.model_version,
        uptime_s=round(time.time() - state.started, 1),
        prediction_log_queue=log.pending,
        prediction_log_write_failures=log.write_failures,
        prediction_log_problem=log.problem,
        prediction_log_dropped_rows=log.dropped,
        model_runtime=forest.runtime if (forest := model.forest) else "scikit-learn",
        model_runtime_problem=forest.problem if forest else None,
        interval_runtime=scale.runtime if (scale := model.scale_forest) else None,
        interval_runtime_problem=scale.problem if scale else None,
        explain_runtime="pred_contrib" if forest else None,
        shadow_challenger=None if shadow.model is None else shadow.model.info.model_version,
        shadow_problem=shadow.problem,
    )
