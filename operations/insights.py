"""Insights from the prediction log, the analysis: every figure of what ``housing report`` writes.

Reads a window of the log through its read API (housing.log.queries: the same SQL on SQLite and
PostgreSQL) and works out every figure the report quotes; operations.insights_report draws and writes it:

* traffic over time, from the per-minute ``traffic`` totals;
* request latency percentiles (p50, p95, p99 by nearest rank, so each is a
  logged latency), overall and per endpoint, from ``predictions`` (one latency per request);
* the logged inputs against the served model's training profile
  (housing.drift_stats): PSI and test per feature, medians and deciles;
* error and interval coverage on authenticated feedback (the feedback that
  trains models), overall, per ``ocean_proximity`` value and per median-income
  band (params.yaml ``prepare.income_bands``, banded as the split does);
* PSI per feature over equal time windows: drift over time;
* findings: sentences whose every number is one of the figures above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS
from housing.drift_stats import drift_report
from housing.log.queries import INPUTS, LogReader
from housing.log.schema import TRAFFIC_SLOT_S
from housing.slices import INCOME_BAND, band_names, income_band

# Traffic bucket widths (s) to choose from: the first that draws the period in at most MAX_BUCKETS bars.
BUCKET_WIDTHS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
MAX_BUCKETS = 120
PERCENTILES = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99}
DECILES = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class ReportOptions:
    """What a report covers and how it judges.

    ``since``/``until`` bound the prediction times (s since the epoch); traffic is
    read by whole minutes. ``min_rows`` is the fewest houses a drift verdict needs,
    ``windows`` the number of equal time windows of the drift-over-time section.
    The findings name a slice's error or coverage only from ``min_slice`` houses up
    (smaller slices stay in the tables).
    """

    since: float
    until: float
    income_bands: Sequence[float]
    psi_threshold: float
    p_value: float
    min_rows: int
    windows: int = 6
    bucket_s: int | None = None
    min_slice: int = 20


# -- the sections -------------------------------------------------------------


def traffic_over_time(traffic: pd.DataFrame, bucket_s: int | None = None) -> dict[str, Any]:
    """Requests and houses per time bucket (every bucket from the first to the last busy one), and the peak.

    Without ``bucket_s`` the width is the first of :data:`BUCKET_WIDTHS_S` that
    draws the period in at most :data:`MAX_BUCKETS` buckets.
    """
    if traffic.empty:
        return {"bucket_s": bucket_s or BUCKET_WIDTHS_S[0], "requests": 0, "houses": 0, "buckets": [], "peak": None}
    starts = traffic["slot"].to_numpy() * TRAFFIC_SLOT_S
    if bucket_s is None:
        span = int(starts.max() - starts.min()) + TRAFFIC_SLOT_S
        bucket_s = next((w for w in BUCKET_WIDTHS_S if span / w <= MAX_BUCKETS), BUCKET_WIDTHS_S[-1])
    position = starts // bucket_s
    totals = traffic[["requests", "houses"]].groupby(position).sum()
    totals = totals.reindex(range(int(position.min()), int(position.max()) + 1), fill_value=0)
    buckets = [
        {"start": float(index * bucket_s), "requests": int(requests), "houses": int(houses)}
        for index, requests, houses in zip(totals.index, totals["requests"], totals["houses"], strict=True)
    ]
    # The busiest bucket is the one that priced the most houses (the model's load); the first of equals.
    peak = max(buckets, key=lambda b: (b["houses"], b["requests"], -b["start"]))
    return {
        "bucket_s": bucket_s,
        "requests": int(totals["requests"].sum()),
        "houses": int(totals["houses"].sum()),
        "buckets": buckets,
        "peak": peak,
    }


def latency_percentiles(predictions: pd.DataFrame) -> dict[str, Any]:
    """p50, p95, p99 and mean (ms) of the request latencies, overall and per endpoint.

    Every house of a request carries the request's latency: one value per request.
    """
    per_request = predictions.groupby("request_id", sort=False).agg(
        endpoint=("endpoint", "first"), latency_ms=("latency_ms", "max")
    )
    return {
        "overall": _percentiles(per_request["latency_ms"].to_numpy()),
        "by_endpoint": {
            str(endpoint): _percentiles(group.to_numpy())
            for endpoint, group in per_request.groupby("endpoint")["latency_ms"]
        },
    }


def _percentiles(latencies: np.ndarray) -> dict[str, Any]:
    if not len(latencies):
        return {"requests": 0, **dict.fromkeys(PERCENTILES), "mean_ms": None}
    # inverted_cdf is the nearest-rank percentile: a latency some request had.
    ranks = {name: float(np.percentile(latencies, q, method="inverted_cdf")) for name, q in PERCENTILES.items()}
    return {"requests": len(latencies), **ranks, "mean_ms": float(np.mean(latencies))}


def inputs_against_training(profile: Mapping[str, Any], inputs: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    """Per feature: PSI, test p-value and verdict (housing.drift_stats), and the log's deciles and median
    beside the training sample's; category shares side by side."""
    rows = len(inputs)
    if rows < options.min_rows:
        return {"status": "insufficient_data", "rows": rows, "min_rows": options.min_rows}
    report = drift_report(profile, _columns(inputs), options.psi_threshold, options.p_value)
    features = {}
    for name in NUMERIC_COLUMNS:
        training = np.asarray(profile["numeric"][name]["sample"], dtype=float)
        logged = inputs[name].dropna().to_numpy(dtype=float)
        features[name] = {
            **report["features"][name],
            "training_median": float(np.median(training)),
            # None when the log holds no value of the feature (every total_bedrooms left out).
            "log_median": float(np.median(logged)) if len(logged) else None,
            "training_deciles": np.quantile(training, DECILES).tolist(),
            "log_deciles": np.quantile(logged, DECILES).tolist() if len(logged) else None,
        }
    training_shares = profile["categorical"][CATEGORICAL_COLUMN]
    logged_shares = inputs[CATEGORICAL_COLUMN].value_counts(normalize=True)
    features[CATEGORICAL_COLUMN] = {
        **report["features"][CATEGORICAL_COLUMN],
        "training_shares": {c: float(s) for c, s in training_shares.items()},
        "log_shares": {c: float(logged_shares.get(c, 0.0)) for c in training_shares},
    }
    return {
        "status": "ok",
        "rows": rows,
        "thresholds": report["thresholds"],
        "drifted_features": report["drifted_features"],
        "features": features,
    }


def _columns(inputs: pd.DataFrame) -> dict[str, list[Any]]:
    return {name: inputs[name].tolist() for name in INPUTS}


def feedback_slices(feedback: pd.DataFrame, income_edges: Sequence[float]) -> dict[str, Any]:
    """Error and interval coverage on feedback: overall, per ``ocean_proximity`` and per income band.

    Error is price minus actual (USD). Coverage is the share of the houses with
    interval bounds whose actual price lies within them; houses without bounds
    (a model without intervals) are left out of it, and counted.
    """
    labels = band_names(income_edges)
    bands = income_band(feedback["median_income"], income_edges)
    by_band = {labels[int(band)]: _slice(group) for band, group in feedback.groupby(bands)}
    return {
        "overall": _slice(feedback),
        "by": {
            CATEGORICAL_COLUMN: {str(c): _slice(group) for c, group in feedback.groupby(CATEGORICAL_COLUMN)},
            INCOME_BAND: {label: by_band[label] for label in labels if label in by_band},
        },
    }


def _slice(rows: pd.DataFrame) -> dict[str, Any]:
    error = rows["price_usd"] - rows["actual_price_usd"]
    bounded = rows.dropna(subset=["lower_usd", "upper_usd"])
    actual = bounded["actual_price_usd"]
    covered = (bounded["lower_usd"] <= actual) & (actual <= bounded["upper_usd"])
    n = len(rows)
    return {
        "n": n,
        "mae_usd": float(error.abs().mean()) if n else None,
        "rmse_usd": math.sqrt(float((error**2).mean())) if n else None,
        "bias_usd": float(error.mean()) if n else None,
        "with_bounds": len(bounded),
        "coverage": float(covered.mean()) if len(bounded) else None,
    }


def drift_over_time(profile: Mapping[str, Any], inputs: pd.DataFrame, options: ReportOptions) -> dict[str, Any]:
    """PSI per feature in each of ``options.windows`` equal time windows from the first to the last logged house.

    A window holds the houses with ``start <= ts < end`` (the last one also its
    end); one with fewer than ``options.min_rows`` houses gets no scores.
    """
    if inputs.empty:
        return {"min_rows": options.min_rows, "windows": []}
    ts = inputs["ts"].to_numpy()
    edges = np.linspace(ts.min(), ts.max(), options.windows + 1)
    position = np.searchsorted(edges[1:-1], ts, side="right")
    windows = []
    for i in range(options.windows):
        rows = inputs[position == i]
        window: dict[str, Any] = {"start": float(edges[i]), "end": float(edges[i + 1]), "rows": len(rows)}
        if len(rows) >= options.min_rows:
            scores = drift_report(profile, _columns(rows), options.psi_threshold, options.p_value)
            window["psi"] = {name: result["psi"] for name, result in scores["features"].items()}
            window["drifted_features"] = scores["drifted_features"]
        windows.append(window)
    return {"min_rows": options.min_rows, "psi_threshold": options.psi_threshold, "windows": windows}


# -- the findings -------------------------------------------------------------


def findings(report: Mapping[str, Any]) -> list[str]:
    """Sentences about the period, each number read from ``report``."""
    sentences = [
        sentence
        for make in (_traffic_finding, _latency_finding, _inputs_finding, _error_finding, _coverage_finding)
        if (sentence := make(report))
    ]
    return sentences + _drift_findings(report)


def _traffic_finding(report: Mapping[str, Any]) -> str:
    traffic = report["traffic"]
    if traffic["peak"] is None:
        return "No traffic was logged in the period."
    peak = traffic["peak"]
    return (
        f"Traffic peaked at {utc(peak['start'])} with {count(peak['houses'], 'house')} priced in "
        f"{duration(traffic['bucket_s'])} ({count(peak['requests'], 'request')}); "
        f"{count(traffic['requests'], 'request')} priced {count(traffic['houses'], 'house')} in the period."
    )


def _latency_finding(report: Mapping[str, Any]) -> str:
    latency = report["latency"]
    overall = latency["overall"]
    if not overall["requests"]:
        return ""
    slowest, figures = max(latency["by_endpoint"].items(), key=lambda item: item[1]["p95_ms"])
    return (
        f"Request latency over {overall['requests']:,} requests: p50 {overall['p50_ms']:.1f} ms, p95 "
        f"{overall['p95_ms']:.1f} ms, p99 {overall['p99_ms']:.1f} ms; the slowest endpoint at p95 is /{slowest} "
        f"({figures['p95_ms']:.1f} ms over {figures['requests']:,} requests)."
    )


def _inputs_finding(report: Mapping[str, Any]) -> str:
    inputs = report["inputs"]
    if inputs["status"] != "ok":
        return (
            f"Only {inputs['rows']:,} houses were priced in the period; comparing them with the training data "
            f"needs {inputs['min_rows']:,}."
        )
    name, figures = max(inputs["features"].items(), key=lambda item: item[1]["psi"])
    verdict = (
        f"drifted features against the training data: {', '.join(inputs['drifted_features'])}"
        if inputs["drifted_features"]
        else "no feature passes the drift thresholds against the training data"
    )
    shift = (
        f", median {figures['log_median']:,.4g} in the log against {figures['training_median']:,.4g} in training"
        if figures.get("log_median") is not None
        else ""
    )
    largest = f"the largest PSI is {name}'s, {figures['psi']:.3f}{shift}"
    return f"Over {inputs['rows']:,} priced houses, {verdict}; {largest}."


def _error_finding(report: Mapping[str, Any]) -> str:
    feedback = report["feedback"]
    overall = feedback["overall"]
    if not overall["n"]:
        return "No authenticated feedback came back for the period's houses: there is no error to report."
    worst = [
        f"{slice_} = {label} (MAE {figures['mae_usd']:,.0f} USD over {count(figures['n'], 'house')})"
        for slice_, groups in feedback["by"].items()
        if (large := {k: v for k, v in groups.items() if v["n"] >= feedback["min_slice"]})
        for label, figures in [max(large.items(), key=lambda item: item[1]["mae_usd"])]
    ]
    where = (
        f"error is highest for {' and for '.join(worst)}"
        if worst
        else f"no slice has the {feedback['min_slice']:,} houses to compare slices by"
    )
    return (
        f"On {count(overall['n'], 'house')} with feedback the MAE is {overall['mae_usd']:,.0f} USD, the RMSE "
        f"{overall['rmse_usd']:,.0f} USD and the mean error {overall['bias_usd']:+,.0f} USD; {where}."
    )


def _coverage_finding(report: Mapping[str, Any]) -> str:
    overall = report["feedback"]["overall"]
    if not overall["n"]:
        return ""
    if not overall["with_bounds"]:
        return (
            f"None of the {overall['n']:,} houses with feedback has interval bounds in the log (lower_usd and "
            "upper_usd are empty: the model that priced them gave no interval), so coverage cannot be measured."
        )
    min_slice = report["feedback"]["min_slice"]
    lowest = [
        f"{slice_} = {label} ({figures['coverage']:.1%} of {figures['with_bounds']:,})"
        for slice_, groups in report["feedback"]["by"].items()
        if (bounded := {k: v for k, v in groups.items() if v["with_bounds"] >= min_slice})
        for label, figures in [min(bounded.items(), key=lambda item: item[1]["coverage"])]
    ]
    where = (
        f"coverage is lowest for {' and for '.join(lowest)}"
        if lowest
        else f"no slice has the {min_slice:,} houses with bounds to compare slices by"
    )
    return (
        f"The price interval held the actual price for {overall['coverage']:.1%} of the {overall['with_bounds']:,} "
        f"houses with bounds and feedback; {where}."
    )


def _drift_findings(report: Mapping[str, Any]) -> list[str]:
    windows = report["drift_over_time"]["windows"]
    scored = [w for w in windows if "psi" in w]
    if len(scored) < 2:
        return [
            f"{len(scored)} of the {len(windows)} time windows had the {report['drift_over_time']['min_rows']:,} "
            "houses a drift score needs: too few to follow drift over time."
        ]
    first, last = scored[0], scored[-1]
    name = max(first["psi"], key=lambda feature: abs(last["psi"][feature] - first["psi"][feature]))
    return [
        f"{name} changed most over time: its PSI against the training data went from {first['psi'][name]:.3f} "
        f"(window from {utc(first['start'])}) to {last['psi'][name]:.3f} (window from {utc(last['start'])})."
    ]


# -- the report ---------------------------------------------------------------


def build_report(reads: LogReader, profile: Mapping[str, Any] | None, options: ReportOptions) -> dict[str, Any]:
    """Every section's figures and the findings, as one JSON-ready dict.

    Raises housing.log.queries.OutdatedLogError for a log older than this code.
    """
    data = reads.window(options.since, options.until)
    inputs = data.predictions
    report: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).timestamp(),
        "source": reads.store.describe(),
        "period": {
            "since": options.since,
            "until": options.until,
            "first_ts": float(inputs["ts"].min()) if len(inputs) else None,
            "last_ts": float(inputs["ts"].max()) if len(inputs) else None,
        },
        "totals": {"houses": len(inputs), "requests": int(inputs["request_id"].nunique())},
        "traffic": traffic_over_time(data.traffic, options.bucket_s),
        "latency": latency_percentiles(inputs),
        "feedback": {
            "untrusted_left_out": data.untrusted_feedback,
            "min_slice": options.min_slice,
            **feedback_slices(data.feedback, options.income_bands),
        },
    }
    if profile is None:
        report["inputs"] = {"status": "no_profile", "rows": len(inputs), "min_rows": options.min_rows}
        report["drift_over_time"] = {"min_rows": options.min_rows, "windows": []}
    else:
        report["inputs"] = inputs_against_training(profile, inputs, options)
        report["drift_over_time"] = drift_over_time(profile, inputs, options)
    report = _json_ready(report)
    report["findings"] = findings(report)
    return report


def _json_ready(value: Any) -> Any:
    """``value`` with every NaN (a test's p-value over no values) as None: report.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def utc(ts: float) -> str:
    """A time (s since the epoch) as UTC text."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: ``1 house``, ``2,000 houses``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def duration(seconds: float) -> str:
    """A whole number of days, hours or minutes in words (``one hour``, ``15 minutes``), else seconds."""
    for unit, width in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % width == 0:
            count = int(seconds // width)
            return f"one {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} s"
