"""Drift of the houses the service priced, against the training data saved with the model."""

from __future__ import annotations

from typing import Any

from housing.drift_stats import drift_report
from service import prometheus_metrics
from service.prediction_log import PredictionLog


def check_drift(reference: dict[str, Any], log: PredictionLog) -> dict[str, Any]:
    """Score the latest window of logged inputs; publish the scores as metrics.

    With fewer logged houses than the profile's ``min_rows`` the verdict would be
    noise, so the answer says so instead of scoring.
    """
    window = reference["window"]
    columns = log.recent_inputs(window["rows"])
    rows = len(columns["ocean_proximity"])
    if rows < window["min_rows"]:
        return {"status": "insufficient_data", "rows": rows, "min_rows": window["min_rows"], "drift_detected": False}
    thresholds = reference["thresholds"]
    report = drift_report(reference, columns, thresholds["psi"], thresholds["p_value"])
    for feature, result in report["features"].items():
        prometheus_metrics.DRIFT_SCORE.labels(feature).set(result["psi"])
    prometheus_metrics.DRIFT_DETECTED.set(int(report["drift_detected"]))
    return {"status": "ok", **report}
