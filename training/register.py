"""Register: log the chosen model to MLflow, point ``@champion`` at it, import it into BentoML.

The model is logged on the winning family's parent run (so the version links to
the search that produced it) in the skops format with an explicit trust list,
with a signature and an input example of raw records. The registered version is
tagged with its metrics and the data version (the DVC/MD5 hash of the raw CSV),
and the same version is imported into the BentoML model store with its MLflow
name, version and run id, so the service can load it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bentoml
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from training.config import Params, load_params
from training.drift import reference_profile
from training.estimators import TRUSTED_TYPES, load_model
from training.features import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS
from training.prepare import load_split

log = logging.getLogger(__name__)

# What the logged model needs to load, beyond the project's own package.
RUNTIME_PACKAGES = ("scikit-learn", "lightgbm", "numpy", "pandas", "scipy", "skops")

SIGNATURE = ModelSignature(
    inputs=Schema([*(ColSpec("double", name) for name in NUMERIC_COLUMNS), ColSpec("string", CATEGORICAL_COLUMN)]),
    outputs=Schema([ColSpec("double", "median_house_value")]),
)


class QualityFloorError(RuntimeError):
    """The model's test metrics miss the configured floor; it is not registered."""


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for it in dvc.lock."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def input_example(test_path: Path, rows: int = 3) -> pd.DataFrame:
    """A few raw test records, one with ``total_bedrooms`` missing, as the model takes them."""
    X, _ = load_split(test_path)
    example = X.head(rows).astype(dict.fromkeys(NUMERIC_COLUMNS, "float64")).reset_index(drop=True)
    example.loc[0, "total_bedrooms"] = float("nan")
    return example[list(FEATURE_COLUMNS)]


def write_reference_profile(params: Params) -> Path:
    """Profile the training inputs for drift detection, with the thresholds to judge by."""
    drift = params.drift
    X, _ = load_split(params.prepare.train_path)
    profile = reference_profile(X, bins=drift.bins, sample_size=drift.sample_size, seed=params.train.seed)
    profile["thresholds"] = {"psi": drift.psi_threshold, "p_value": drift.p_value}
    profile["window"] = {"rows": drift.window, "min_rows": drift.min_rows}
    drift.profile_path.parent.mkdir(parents=True, exist_ok=True)
    drift.profile_path.write_text(json.dumps(profile) + "\n")
    return drift.profile_path


def version_tags(metrics: dict[str, Any], data_version: str) -> dict[str, str]:
    winner = metrics["winner"]
    tags = {f"test_{name}": f"{value:.6g}" for name, value in metrics["test"].items()}
    tags |= {f"cv_{name}": f"{value:.6g}" for name, value in metrics["families"][winner]["cv"].items()}
    return tags | {"family": winner, "data_version": data_version}


def register(params: Params) -> dict[str, Any]:
    """Log, register and alias the model; import it into BentoML; return the registration."""
    reg = params.register_
    metrics = json.loads(params.evaluate.metrics_path.read_text())
    if reg.require_quality_floor and not metrics["quality_floor"]["met"]:
        raise QualityFloorError(
            f"test metrics {metrics['test']} miss the quality floor {metrics['quality_floor']}; not registering"
        )
    data_version = file_md5(params.data.raw_path)
    mlflow.set_experiment(reg.experiment)
    client = MlflowClient()
    with _winner_run(client, metrics) as run:
        run_id = run.info.run_id
        mlflow.log_metrics({f"test_{name}": value for name, value in metrics["test"].items()})
        mlflow.set_tags({"data_version": data_version, "role": "champion_candidate"})
        for report in (params.evaluate.metrics_path, params.evaluate.report_path, params.validate_.report_path):
            mlflow.log_artifact(str(report), artifact_path="reports")
        profile_path = write_reference_profile(params)
        info = mlflow.sklearn.log_model(
            load_model(params.train.model_path),
            name="model",
            signature=SIGNATURE,
            input_example=input_example(params.prepare.test_path),
            registered_model_name=reg.model_name,
            skops_trusted_types=list(TRUSTED_TYPES),
            pip_requirements=[f"{package}=={version(package)}" for package in RUNTIME_PACKAGES],
            extra_files=[str(profile_path)],
        )
    model_version = str(info.registered_model_version)
    for key, value in version_tags(metrics, data_version).items():
        client.set_model_version_tag(reg.model_name, model_version, key, value)
    client.set_registered_model_alias(reg.model_name, reg.alias, model_version)
    bento_model = import_into_bentoml(params, model_version, run_id, metrics, data_version)
    registration = {
        "model_name": reg.model_name,
        "version": model_version,
        "alias": reg.alias,
        "run_id": run_id,
        "model_uri": f"models:/{reg.model_name}/{model_version}",
        "tracking_uri": mlflow.get_tracking_uri(),
        "data_version": data_version,
        "bento_model": str(bento_model.tag),
        "test": metrics["test"],
    }
    log.info("registered %s version %s as @%s; BentoML %s", reg.model_name, model_version, reg.alias, bento_model.tag)
    return registration


def _winner_run(client: MlflowClient, metrics: dict[str, Any]) -> mlflow.ActiveRun:
    """Resume the winning family's search run, or record a new one if the store no longer has it.

    The second case happens when the tracking store moved after training: the
    model file is still the same, so it is registered under a run that says so.
    """
    winner = metrics["winner"]
    run_id = metrics["families"][winner]["run_id"]
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        log.warning("run %s is not in %s; recording the registration in a new run", run_id, mlflow.get_tracking_uri())
        run = mlflow.start_run(run_name=f"{winner}-registration", tags={"family": winner, "search_run_id": run_id})
        mlflow.log_params({f"best_{key}": value for key, value in metrics["families"][winner]["best_params"].items()})
        mlflow.log_metrics({f"cv_{name}": value for name, value in metrics["families"][winner]["cv"].items()})
        return run
    return mlflow.start_run(run_id=run_id)


def champion_available(params: Params) -> bool:
    """Whether the tracking store has ``@alias`` and the BentoML store has that version."""
    reg = params.register_
    try:
        version = MlflowClient().get_model_version_by_alias(reg.model_name, reg.alias).version
    except mlflow.exceptions.MlflowException:
        return False
    return any(
        model.info.labels.get("mlflow_version") == str(version) for model in bentoml.models.list(reg.bento_model_name)
    )


def import_into_bentoml(
    params: Params, model_version: str, run_id: str, metrics: dict[str, Any], data_version: str
) -> bentoml.Model:
    """Copy the registered version into the BentoML model store, labelled with its MLflow identity."""
    reg = params.register_
    return bentoml.mlflow.import_model(
        reg.bento_model_name,
        model_uri=f"models:/{reg.model_name}/{model_version}",
        labels={
            "mlflow_model": reg.model_name,
            "mlflow_version": model_version,
            "mlflow_alias": reg.alias,
            "family": metrics["winner"],
        },
        metadata={
            "mlflow_model": reg.model_name,
            "mlflow_version": model_version,
            "mlflow_run_id": run_id,
            "tracking_uri": mlflow.get_tracking_uri(),
            "data_version": data_version,
            "test_metrics": metrics["test"],
            "cv_metrics": metrics["families"][metrics["winner"]]["cv"],
            "feature_columns": list(FEATURE_COLUMNS),
        },
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that the champion is in the MLflow and BentoML stores"
    )
    args = parser.parse_args(argv)
    params = load_params()
    if args.check:
        available = champion_available(params)
        found = "found" if available else "NOT found"
        log.info("champion %s in %s and the BentoML store", found, mlflow.get_tracking_uri())
        sys.exit(0 if available else 1)
    try:
        registration = register(params)
    except QualityFloorError as exc:
        log.error("%s", exc)
        sys.exit(1)
    path = params.register_.registration_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registration, indent=2) + "\n")


if __name__ == "__main__":
    main()
