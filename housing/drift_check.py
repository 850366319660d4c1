"""Drift of the houses the service priced, against the training data saved with the model.

The service (``GET /drift``), the CLI (``housing drift``) and the retraining trigger all judge drift here:
the latest window of logged inputs (housing.log.queries) scored by housing.drift_stats. Each check sets
the drift gauges, which ``/metrics`` serves from the service's workers.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Gauge

from housing.drift_stats import drift_report
from housing.log.queries import LogReader

DRIFT_SCORE = Gauge(
    "housing_drift_psi",
    "PSI of each feature over the latest drift window.",
    ["feature"],
    multiprocess_mode="mostrecent",
)
DRIFT_DETECTED = Gauge(
    "housing_drift_detected", "1 when any feature drifted in the latest drift check.", multiprocess_mode="mostrecent"
)


def check_drift(reference: dict[str, Any], reader: LogReader) -> dict[str, Any]:
    """Score the latest window of logged inputs against ``reference`` (a model's training profile).

    With fewer logged houses than the profile's ``min_rows`` the verdict would be
    noise, so the answer says so instead of scoring.
    """
    window = reference["window"]
    columns = reader.recent_inputs(window["rows"])
    rows = len(columns["ocean_proximity"])
    if rows < window["min_rows"]:
        return {"status": "insufficient_data", "rows": rows, "min_rows": window["min_rows"], "drift_detected": False}
    thresholds = reference["thresholds"]
    report = drift_report(reference, columns, thresholds["psi"], thresholds["p_value"])
    for feature, result in report["features"].items():
        DRIFT_SCORE.labels(feature).set(result["psi"])
    DRIFT_DETECTED.set(int(report["drift_detected"]))
    return {"status": "ok", **report}
