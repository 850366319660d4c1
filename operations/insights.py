"""Insights from the prediction log: what ``housing report`` writes.

Reads the log through housing.log_store (the same SQL on SQLite and PostgreSQL)
and writes ``report.md`` with PNG figures, and ``report.json`` with every figure
the prose quotes:

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

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS
from housing.drift_stats import drift_report
from housing.log_schema import (
    AUTHENTICATED,
    FEEDBACK,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    PREDICTIONS,
    TRAFFIC,
    TRAFFIC_SLOT_S,
)
from housing.log_store import LogStore, Session, SQLiteStore
from training import plots
from training.prepare import income_band

INPUTS = [*NUMERIC_COLUMNS, CATEGORICAL_COLUMN]
# Traffic bucket widths (s) to choose from: the first that draws the period in at most MAX_BUCKETS bars.
BUCKET_WIDTHS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
MAX_BUCKETS = 120
PERCENTILES = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99}
DECILES = np.linspace(0.1, 0.9, 9)

PREDICTION_COLUMNS = ["request_id", "endpoint", "ts", "latency_ms", *INPUTS]
FEEDBACK_COLUMNS = ["ts", "price_usd", "lower_usd", "upper_usd", CATEGORICAL_COLUMN, "median_income"]
TRAFFIC_COLUMNS = ["slot", "requests", "houses"]

# Table and column names in these statements are the project's own; every value is a parameter.
_PREDICTIONS_SQL = f"""SELECT {", ".join(PREDICTION_COLUMNS)} FROM {PREDICTIONS}
                       WHERE ts >= ? AND ts < ? ORDER BY id"""  # noqa: S608  # nosec B608
_FEEDBACK_SQL = f"""
    SELECT {", ".join(f"p.{name}" for name in FEEDBACK_COLUMNS)}, f.actual_price_usd
    FROM {FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id AND p.idx = f.idx
    WHERE f.{AUTHENTICATED} = 1 AND p.ts >= ? AND p.ts < ? ORDER BY f.id
"""  # noqa: S608  # nosec B608
_UNTRUSTED_SQL = f"""SELECT COUNT(*) FROM {FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id
                     AND p.idx = f.idx WHERE f.{AUTHENTICATED} = 0 AND p.ts >= ? AND p.ts < ?"""  # noqa: S608  # nosec B608
_TRAFFIC_SQL = f"SELECT {', '.join(TRAFFIC_COLUMNS)} FROM {TRAFFIC} WHERE slot >= ? AND slot <= ? ORDER BY slot"  # noqa: S608  # nosec B608


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


class OutdatedLogError(Exception):
    """The log has not had every migration this code reads: the service, when it starts, applies them."""


@dataclass(frozen=True)
class LogData:
    """The part of the log a report reads."""

    predictions: pd.DataFrame
    feedback: pd.DataFrame
    untrusted_feedback: int
    traffic: pd.DataFrame


def read_log(store: LogStore, since: float, until: float) -> LogData:
    """Predictions, authenticated feedback (joined to its prediction) and traffic minutes between two times."""
    empty = LogData(
        pd.DataFrame(columns=PREDICTION_COLUMNS),
        pd.DataFrame(columns=[*FEEDBACK_COLUMNS, "actual_price_usd"]),
        0,
        pd.DataFrame(columns=TRAFFIC_COLUMNS),
    )
    if isinstance(store, SQLiteStore) and not store.path.exists():
        return empty
    with store.reading() as session:
        if not store.table_columns(session, PREDICTIONS):
            return empty
        _check_schema(store, session)
        window = [since, until]
        predictions = pd.DataFrame(session.dicts(_PREDICTIONS_SQL, window), columns=empty.predictions.columns)
        feedback = pd.DataFrame(session.dicts(_FEEDBACK_SQL, window), columns=empty.feedback.columns)
        untrusted = int(session.execute(_UNTRUSTED_SQL, window).fetchone()[0])
        slots = [int(since // TRAFFIC_SLOT_S), int(until // TRAFFIC_SLOT_S)]
        traffic = pd.DataFrame(session.dicts(_TRAFFIC_SQL, slots), columns=empty.traffic.columns)
    numeric = ["ts", "latency_ms", *NUMERIC_COLUMNS]
    predictions[numeric] = predictions[numeric].astype(float)
    money = ["ts", "price_usd", "lower_usd", "upper_usd", "median_income", "actual_price_usd"]
    feedback[money] = feedback[money].astype(float)
    traffic = traffic.astype(int)  # an empty frame's columns are objects
    return LogData(predictions, feedback, untrusted, traffic)


def _check_schema(store: LogStore, session: Session) -> None:
    """Refuse a log older than this code: a report only reads, so it cannot migrate the log itself."""
    latest = MIGRATIONS[-1].version
    applied = 0
    if store.table_columns(session, MIGRATIONS_TABLE):
        applied = session.execute(f"SELECT MAX(version) FROM {MIGRATIONS_TABLE}").fetchone()[0] or 0  # noqa: S608  # nosec B608
    if applied < latest:
        raise OutdatedLogError(
            f"the log {store.describe()} has schema version {applied}, this report reads version {latest}: "
            "start the service once on it (it migrates the log), then run the report again"
        )


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


def band_labels(edges: Sequence[float]) -> list[str]:
    """Readable names of the median-income bands (tens of thousands of USD), the last one open-ended."""
    return [f"{low:g}-{high:g}" for low, high in pairwise(edges)] + [f"{edges[-1]:g}+"]


def feedback_slices(feedback: pd.DataFrame, income_edges: Sequence[float]) -> dict[str, Any]:
    """Error and interval coverage on feedback: overall, per ``ocean_proximity`` and per income band.

    Error is price minus actual (USD). Coverage is the share of the houses with
    interval bounds whose actual price lies within them; houses without bounds
    (a model without intervals) are left out of it, and counted.
    """
    labels = band_labels(income_edges)
    bands = income_band(feedback["median_income"], income_edges)
    by_band = {labels[int(band)]: _slice(group) for band, group in feedback.groupby(bands)}
    return {
        "overall": _slice(feedback),
        "by": {
            CATEGORICAL_COLUMN: {str(c): _slice(group) for c, group in feedback.groupby(CATEGORICAL_COLUMN)},
            "income_band": {label: by_band[label] for label in labels if label in by_band},
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
        f"Traffic peaked at {utc(peak['start'])} with {_count(peak['houses'], 'house')} priced in "
        f"{_duration(traffic['bucket_s'])} ({_count(peak['requests'], 'request')}); "
        f"{_count(traffic['requests'], 'request')} priced {_count(traffic['houses'], 'house')} in the period."
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
        f"{slice_} = {label} (MAE {figures['mae_usd']:,.0f} USD over {_count(figures['n'], 'house')})"
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
        f"On {_count(overall['n'], 'house')} with feedback the MAE is {overall['mae_usd']:,.0f} USD, the RMSE "
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


def build_report(store: LogStore, profile: Mapping[str, Any] | None, options: ReportOptions) -> dict[str, Any]:
    """Every section's figures and the findings, as one JSON-ready dict."""
    data = read_log(store, options.since, options.until)
    inputs = data.predictions
    report: dict[str, Any] = {
        "generated_at": datetime.now(timezone.utc).timestamp(),
        "source": store.describe(),
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


def write_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    """``report.json``, ``report.md`` and the figures in ``out/figures``; the files written."""
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for old in figures_dir.glob("*.png"):
        old.unlink()  # a figure this period has no data for must not survive from an earlier report
    written = []
    for name, draw in FIGURES.items():
        if (fig := draw(report)) is not None:
            plots.save(fig, figures_dir / f"{name}.png")
            written.append(figures_dir / f"{name}.png")
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report, {path.stem for path in written}))
    return [out / "report.json", out / "report.md", *written]


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    for unit, width in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % width == 0:
            count = int(seconds // width)
            return f"one {unit}" if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} s"


# -- figures ------------------------------------------------------------------
# Each returns None when its section has nothing to draw.


def _traffic_figure(report: Mapping[str, Any]) -> Any:
    traffic = report["traffic"]
    if not traffic["buckets"]:
        return None
    starts = _dates([b["start"] for b in traffic["buckets"]])
    width = traffic["bucket_s"] / 86_400 * 0.9  # matplotlib dates are in days
    fig, (requests, houses) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    requests.bar(starts, [b["requests"] for b in traffic["buckets"]], width=width, align="edge")
    houses.bar(starts, [b["houses"] for b in traffic["buckets"]], width=width, align="edge", color="tab:orange")
    requests.set(ylabel="requests", title=f"Traffic in buckets of {_duration(traffic['bucket_s'])} (UTC)")
    houses.set(ylabel="houses priced")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _latency_figure(report: Mapping[str, Any]) -> Any:
    by_endpoint = report["latency"]["by_endpoint"]
    if not by_endpoint:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(by_endpoint) + 2))
    names = list(by_endpoint)
    for offset, (key, color) in enumerate(zip(PERCENTILES, ("tab:blue", "tab:orange", "tab:red"), strict=True)):
        positions = np.arange(len(names)) + (offset - 1) * 0.27
        values = [by_endpoint[n][key] for n in names]
        ax.barh(positions, values, height=0.25, color=color, label=key.removesuffix("_ms"))
    ax.set_yticks(np.arange(len(names)), [f"/{n}" for n in names])
    ax.set(xlabel="request latency (ms)", title="Latency percentiles per endpoint")
    ax.legend()
    fig.tight_layout()
    return fig


def _inputs_figure(report: Mapping[str, Any]) -> Any:
    inputs = report["inputs"]
    if inputs["status"] != "ok":
        return None
    fig, axes = plt.subplots(3, 3, figsize=(11, 10))
    for ax, name in zip(axes.flat, NUMERIC_COLUMNS, strict=False):
        figures = inputs["features"][name]
        training, logged = figures["training_deciles"], figures["log_deciles"]
        if logged is None:
            ax.set(title=f"{name}: no value logged")
            continue
        ax.plot(training, logged, marker="o")
        low, high = min(*training, *logged), max(*training, *logged)
        ax.plot([low, high], [low, high], color="black", linewidth=1)
        ax.set(title=f"{name} (PSI {figures['psi']:.2f})", xlabel="training deciles", ylabel="log deciles")
    shares = inputs["features"][CATEGORICAL_COLUMN]
    categories = list(shares["training_shares"])
    positions = np.arange(len(categories))
    last = axes.flat[-1]
    last.bar(positions - 0.2, list(shares["training_shares"].values()), width=0.4, label="training")
    last.bar(positions + 0.2, list(shares["log_shares"].values()), width=0.4, label="log")
    last.set_xticks(positions, categories, rotation=30, fontsize=7)
    last.set(title=f"{CATEGORICAL_COLUMN} (PSI {shares['psi']:.2f})", ylabel="share")
    last.legend()
    fig.suptitle("Logged inputs against the training data")
    fig.tight_layout()
    return fig


def _slices_figure(report: Mapping[str, Any], key: str, label: str) -> Any:
    groups = report["feedback"]["by"]
    if not any(figures[key] is not None for slices in groups.values() for figures in slices.values()):
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(11, 3.5))
    for ax, (slice_, slices) in zip(axes, groups.items(), strict=True):
        scored = {name: figures for name, figures in slices.items() if figures[key] is not None}
        ax.barh(list(scored), [figures[key] for figures in scored.values()])
        ax.set(title=slice_, xlabel=label)
    fig.tight_layout()
    return fig


def _drift_figure(report: Mapping[str, Any]) -> Any:
    scored = [w for w in report["drift_over_time"]["windows"] if "psi" in w]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    starts = _dates([w["start"] for w in scored])
    for name in scored[0]["psi"]:
        ax.plot(starts, [w["psi"][name] for w in scored], marker="o", label=name)
    ax.axhline(report["drift_over_time"]["psi_threshold"], color="black", linestyle="--", linewidth=1)
    ax.set(ylabel="PSI against training", title="Drift over time (window start, UTC)")
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _dates(timestamps: Sequence[float]) -> np.ndarray:
    """Times (s since the epoch, UTC) as the datetimes matplotlib draws, to the millisecond."""
    return np.round(np.asarray(timestamps) * 1000).astype("datetime64[ms]")


FIGURES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "traffic": _traffic_figure,
    "latency": _latency_figure,
    "inputs": _inputs_figure,
    "error_by_slice": lambda report: _slices_figure(report, "mae_usd", "MAE (USD)"),
    "coverage_by_slice": lambda report: _slices_figure(report, "coverage", "interval coverage"),
    "drift_over_time": _drift_figure,
}


# -- Markdown -----------------------------------------------------------------


def render_markdown(report: Mapping[str, Any], figures: set[str]) -> str:
    """The report as Markdown, linking the figures that were drawn."""
    period = report["period"]
    span = (
        f"houses priced from {utc(period['first_ts'])} to {utc(period['last_ts'])}"
        if period["first_ts"] is not None
        else "no priced houses"
    )
    parts = [
        "# Insights from the prediction log\n",
        f"Log {report['source']}; {span}; written {utc(report['generated_at'])}.\n",
        "## Findings\n",
        *(f"- {sentence}" for sentence in report["findings"]),
        "",
        _traffic_section(report),
        _latency_section(report),
        _inputs_section(report),
        _feedback_section(report),
        _drift_section(report),
    ]
    text = "\n".join(parts)
    for name in sorted(figures):
        text = text.replace(f"<!-- figure:{name} -->", f"![{name}](figures/{name}.png)")
    # Sections without data drew no figure: drop the placeholders.
    return "\n".join(line for line in text.splitlines() if not line.startswith("<!-- figure:")) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _number(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _traffic_section(report: Mapping[str, Any]) -> str:
    traffic = report["traffic"]
    return (
        "## Traffic over time\n\n"
        f"{traffic['requests']:,} requests, {traffic['houses']:,} houses, in buckets of "
        f"{_duration(traffic['bucket_s'])} (from the per-minute traffic totals).\n\n<!-- figure:traffic -->\n"
    )


def _latency_section(report: Mapping[str, Any]) -> str:
    latency = report["latency"]
    rows = [
        (name, figures["requests"], *(_number(figures[key], ".1f") for key in [*PERCENTILES, "mean_ms"]))
        for name, figures in [("all", latency["overall"]), *((f"/{k}", v) for k, v in latency["by_endpoint"].items())]
    ]
    table = _table(["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "mean ms"], rows)
    return (
        "## Latency\n\nNearest-rank percentiles of the logged request latencies (one per request).\n\n"
        f"{table}\n\n<!-- figure:latency -->\n"
    )


def _inputs_section(report: Mapping[str, Any]) -> str:
    inputs = report["inputs"]
    head = "## Inputs against the training data\n\n"
    if inputs["status"] == "no_profile":
        return head + "No reference profile of the training data was found: nothing to compare with.\n"
    if inputs["status"] != "ok":
        return head + f"Only {inputs['rows']:,} priced houses; a comparison needs {inputs['min_rows']:,}.\n"
    rows = [
        (name, f"{f['psi']:.3f}", _number(f["p_value"], ".2g"), _number(f.get("training_median"), ",.4g"),
         _number(f.get("log_median"), ",.4g"), "**drift**" if f["drifted"] else "ok")
        for name, f in inputs["features"].items()
    ]  # fmt: skip
    thresholds = inputs["thresholds"]
    return (
        f"{head}{inputs['rows']:,} priced houses against the served model's training profile; a feature drifts "
        f"when PSI > {thresholds['psi']} or p < {thresholds['p_value']}.\n\n"
        + _table(["feature", "PSI", "p-value", "training median", "log median", "verdict"], rows)
        + "\n\n<!-- figure:inputs -->\n"
    )


def _feedback_section(report: Mapping[str, Any]) -> str:
    feedback = report["feedback"]
    rows = [
        (slice_, label, f["n"], _number(f["mae_usd"]), _number(f["rmse_usd"]), _number(f["bias_usd"], "+,.0f"),
         f["with_bounds"], _number(f["coverage"], ".1%"))
        for slice_, label, f in [
            ("all", "", feedback["overall"]),
            *((s, label, f) for s, groups in feedback["by"].items() for label, f in groups.items()),
        ]
    ]  # fmt: skip
    header = ["slice", "value", "houses", "MAE USD", "RMSE USD", "mean error USD", "with bounds", "coverage"]
    table = _table(header, rows)
    untrusted = feedback["untrusted_left_out"]
    note = f" {untrusted:,} answers sent without the feedback token are left out." if untrusted else ""
    if feedback["overall"]["n"] and not feedback["overall"]["with_bounds"]:
        note += (
            " No house with feedback has interval bounds in the log (lower_usd and upper_usd are empty), so "
            "coverage is not measured."
        )
    return (
        "## Error and interval coverage on feedback\n\n"
        "Authenticated feedback joined with its prediction; error is price minus actual; coverage is the share of "
        f"houses with bounds whose actual price lies within them (income bands in tens of thousands of USD).{note}\n\n"
        f"{table}\n\n<!-- figure:error_by_slice -->\n\n<!-- figure:coverage_by_slice -->\n"
    )


def _drift_section(report: Mapping[str, Any]) -> str:
    drift = report["drift_over_time"]
    head = "## Drift over time\n\n"
    if not drift["windows"]:
        return head + "Nothing to score.\n"
    names = next((list(w["psi"]) for w in drift["windows"] if "psi" in w), [])
    rows = [
        (utc(w["start"]), w["rows"], *(f"{w['psi'][n]:.3f}" if "psi" in w else "n/a" for n in names))
        for w in drift["windows"]
    ]
    return (
        f"{head}PSI per feature in equal time windows; a window needs {drift['min_rows']:,} houses to be scored.\n\n"
        + _table(["window start", "houses", *names], rows)
        + "\n\n<!-- figure:drift_over_time -->\n"
    )
