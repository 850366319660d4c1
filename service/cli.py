"""`housing`: operator commands for the running system.

    housing drift [--db PATH] [--out DIR] [--fail-on-drift]

compares the latest priced houses in the prediction log with the training data
saved with the served model, writes ``drift.json`` and a readable ``drift.md``,
and prints the verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import bentoml

from service.config import settings
from service.drift import check_drift
from service.model import MLFLOW_MODEL_FOLDER, REFERENCE_PROFILE
from service.prediction_log import PredictionLog


def render_markdown(report: dict[str, Any], model_tag: str) -> str:
    if report["status"] != "ok":
        return f"# Drift report\n\nOnly {report['rows']} priced houses logged; {report['min_rows']} needed.\n"
    rows = "\n".join(
        f"| {name} | {r['test']} | {r['psi']:.3f} | {r['p_value']:.2g} | {'**drift**' if r['drifted'] else 'ok'} |"
        for name, r in report["features"].items()
    )
    verdict = ", ".join(report["drifted_features"]) or "none"
    return (
        f"# Drift report\n\nModel {model_tag}; the latest {report['rows']} priced houses against the training data.\n"
        f"Thresholds: PSI > {report['thresholds']['psi']} or p < {report['thresholds']['p_value']}.\n\n"
        f"Drifted features: {verdict}\n\n| feature | test | PSI | p-value | verdict |\n|---|---|---|---|---|\n{rows}\n"
    )


def drift_command(args: argparse.Namespace) -> int:
    config = settings()
    bento_model = bentoml.models.get(config.model_tag)
    reference = json.loads((Path(bento_model.path_of(MLFLOW_MODEL_FOLDER)) / REFERENCE_PROFILE).read_text())
    log = PredictionLog(args.db or config.prediction_db)
    try:
        report = check_drift(reference, log)
    finally:
        log.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "drift.md").write_text(render_markdown(report, str(bento_model.tag)))
    if report["status"] != "ok":
        print(f"not enough data: {report['rows']} of {report['min_rows']} houses")
        return 0
    print("drift detected in: " + ", ".join(report["drifted_features"]) if report["drift_detected"] else "no drift")
    return 1 if args.fail_on_drift and report["drift_detected"] else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="housing", description="Operate the housing price service.")
    commands = parser.add_subparsers(dest="command", required=True)
    drift = commands.add_parser("drift", help="compare recent inputs with the training data")
    drift.add_argument("--db", type=Path, help="prediction log (default: HOUSING_PREDICTION_DB)")
    drift.add_argument("--out", type=Path, default=Path("reports/drift"), help="folder for drift.json and drift.md")
    drift.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any feature drifted")
    drift.set_defaults(run=drift_command)
    args = parser.parse_args(argv)
    sys.exit(args.run(args))
