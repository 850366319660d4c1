"""Register: log the trained model to MLflow and promote it to ``@champion`` only if it is better.

The model is logged on the winning family's parent run (so the version links to
the search that produced it): its skops file (loaded with an explicit trust
list) as a pyfunc model of housing.pyfunc_flavor, with a signature, interval
parameters and an input example of raw records. The registered version is
tagged with its metrics and the data version (the DVC/MD5 hash of the raw CSV),
and its model card (training.card_builder) is logged beside the model file and is
the version's description.
It then challenges the champion on the current test split (housing.registry
records the decision); the champion, new or kept, is the BentoML store's latest
model, which the service loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import bentoml
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from lightgbm import LGBMModel
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from housing import pyfunc_flavor
from housing.columns import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS
from housing.compiled_forest import compile_forest
from housing.conformal import ConformalRegressor
from housing.drift_stats import reference_profile
from housing.model_format import (
    MLFLOW_MODEL_FOLDER,
    MODEL_DATA_FOLDER,
    MODEL_FILE,
    PROFILE_TAG,
    extra_file,
    fitted_pipeline,
    load_mlflow_model,
    load_model,
)
from housing.params import Params, RegisterParams, load_params
from housing.registry import Decision, champion_version, crown, is_served, record, served_model, tagged_metrics
from housing.settings import HousingSettings
from training.card_builder import build_card, write_card
from training.prepare import load_split
from training.scoring import regression_metrics

log = logging.getLogger(__name__)

# What the logged model needs to load, beyond the project's own package.
RUNTIME_PACKAGES = ("scikit-learn", "lightgbm", "numpy", "pandas", "scipy", "skops")


def signature(coverage: float | None) -> ModelSignature:
    """Raw records in, a price per record out; with a nominal ``coverage``, the interval parameters too."""
    inputs = Schema([*(ColSpec("double", name) for name in NUMERIC_COLUMNS), ColSpec("string", CATEGORICAL_COLUMN)])
    outputs = Schema([ColSpec("double", "median_house_value")])
    if coverage is None:
        return ModelSignature(inputs=inputs, outputs=outputs)
    return ModelSignature(inputs=inputs, outputs=outputs, params=pyfunc_flavor.params_schema(coverage))


class NoChampionError(RuntimeError):
    """After the decision there is still no champion: there is nothing to serve."""


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


def version_tags(metrics: dict[str, Any], data_version: str, profile: Path) -> dict[str, str]:
    """The tags of a registered version: test and CV figures, family, data version, where its drift profile is."""
    winner = metrics["winner"]
    tags = {f"test_{name}": f"{value:.6g}" for name, value in metrics["test"].items()}
    tags |= {f"cv_{name}": f"{value:.6g}" for name, value in metrics["families"][winner]["cv"].items()}
    return tags | {"family": winner, "data_version": data_version, PROFILE_TAG: extra_file(profile)}


def register(params: Params) -> dict[str, Any]:
    """Register the trained model, let it challenge the champion, and describe the champion after.

    A model below the quality floor is not registered at all. A registered
    challenger becomes ``@champion`` only if it loads from the registry, prices
    the test split with finite values, and beats the champion's RMSE on that same
    split; either way the decision is recorded in MLflow with its reason.
    """
    reg = params.register_
    metrics = json.loads(params.evaluate.metrics_path.read_text())
    mlflow.set_experiment(reg.experiment)
    client = MlflowClient()
    champion = champion_version(client, reg)
    trigger = HousingSettings().retrain_reason or "pipeline"
    if reg.require_quality_floor and not metrics["quality_floor"]["met"]:
        decision = record(client, reg, _below_floor(metrics, champion, trigger))
    else:
        version = log_version(client, params, metrics)
        X_test, y_test = load_split(params.prepare.test_path)
        decision = challenge(client, reg, version, champion, X_test, y_test.to_numpy(), trigger)
        (crown if decision.action == "promote" else record)(client, reg, decision)
    champion = champion_version(client, reg)
    if champion is None:
        raise NoChampionError(f"no @{reg.alias} for {reg.model_name}: {decision.reason}")
    bento_model = served_model(client, reg, str(champion.version))
    return {
        "model_name": reg.model_name,
        "version": str(champion.version),
        "alias": reg.alias,
        "run_id": champion.run_id,
        "model_uri": f"models:/{reg.model_name}/{champion.version!s}",
        "tracking_uri": mlflow.get_tracking_uri(),
        "data_version": champion.tags.get("data_version", ""),
        "bento_model": str(bento_model.tag),
        "test": tagged_metrics(champion),
        "decision": decision.as_dict(),
    }


def log_version(client: MlflowClient, params: Params, metrics: dict[str, Any]) -> str:
    """Log the trained model on its search run and register it as a new version; return the version."""
    reg = params.register_
    data_version = file_md5(params.data.raw_path)
    with _winner_run(client, metrics):
        mlflow.log_metrics({f"test_{name}": value for name, value in metrics["test"].items()})
        mlflow.set_tags({"data_version": data_version, "role": "challenger"})
        for report in (params.evaluate.metrics_path, params.evaluate.report_path, params.validate_.report_path):
            mlflow.log_artifact(str(report), artifact_path="reports")
        card = build_card(params, metrics, data_version)
        info = log_model_file(
            params.train.model_path,
            reg.model_name,
            beside=[write_reference_profile(params), write_card(card, reg.model_card_path)],
            input_example=input_example(params.prepare.test_path),
            pip_requirements=[f"{package}=={version(package)}" for package in RUNTIME_PACKAGES],
        )
    model_version = str(info.registered_model_version)
    client.update_model_version(
        reg.model_name, model_version, description=card.with_version(reg.model_name, model_version).to_markdown()
    )
    for key, value in version_tags(metrics, data_version, params.drift.profile_path).items():
        client.set_model_version_tag(reg.model_name, model_version, key, value)
    return model_version


def log_model_file(path: Path, model_name: str, beside: Sequence[Path] = (), **extra: Any) -> ModelInfo:
    """Log the model file at ``path`` in the active run as a pyfunc model of housing.pyfunc_flavor; register it.

    The files ``beside`` go in the model's folder with it (see housing.model_format.extra_file); ``extra`` goes
    to ``mlflow.pyfunc.log_model`` (input example, requirements).
    """
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / PurePosixPath(MODEL_DATA_FOLDER).name
        folder.mkdir()
        for source, name in [(path, MODEL_FILE), *((file, file.name) for file in beside)]:
            shutil.copyfile(source, folder / name)
        return mlflow.pyfunc.log_model(
            name="model",
            loader_module=pyfunc_flavor.__name__,
            data_path=str(folder),
            signature=signature(getattr(load_model(path), "coverage", None)),
            registered_model_name=model_name,
            **extra,
        )


def score_version(reg: RegisterParams, version: str, X: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Test metrics of a registered version, loaded back from the registry as the service would.

    Raises when the version does not load or prices any house with a non-finite value.
    """
    model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{version}")
    pred = np.asarray(model.predict(X), dtype=float)
    if pred.shape != y.shape or not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} non-finite prices of {len(pred)}")
    return regression_metrics(y, pred)


def challenge(
    client: MlflowClient,
    reg: RegisterParams,
    version: str,
    champion: ModelVersion | None,
    X: pd.DataFrame,
    y: np.ndarray,
    trigger: str,
) -> Decision:
    """Decide whether ``version`` replaces ``champion``, both scored on the same test houses (X, y)."""
    before = str(champion.version) if champion else None
    try:
        after_metrics = score_version(reg, version, X, y)
    except Exception as exc:  # any failure to load or predict makes the challenger unusable
        return Decision("reject", version, f"broken: {type(exc).__name__}: {exc}", before, before, trigger=trigger)
    if champion is None:
        return Decision("promote", version, "first champion", None, version, {}, after_metrics, trigger)
    try:
        before_metrics = score_version(reg, str(champion.version), X, y)
    except Exception as exc:  # a champion that cannot price the test split must go
        reason = f"champion v{before} fails on the test data ({type(exc).__name__}: {exc})"
        return Decision("promote", version, reason, before, version, {}, after_metrics, trigger)
    gain = before_metrics["rmse"] - after_metrics["rmse"]
    compared = (
        f"RMSE {after_metrics['rmse']:,.0f} vs champion v{before}'s {before_metrics['rmse']:,.0f} USD "
        f"on the same {len(y):,} test houses"
    )
    if gain > reg.min_improvement_usd:
        return Decision("promote", version, f"better: {compared}", before, version, before_metrics, after_metrics,
                        trigger)  # fmt: skip
    if gain >= 0 and gives_intervals(reg, version) and not gives_intervals(reg, str(champion.version)):
        return Decision("promote", version, f"as accurate, and gives price intervals the champion lacks: {compared}",
                        before, version, before_metrics, after_metrics, trigger)  # fmt: skip
    reason = f"not better: {compared} (needs more than {reg.min_improvement_usd:,.0f} USD lower)"
    return Decision("reject", version, reason, before, before, before_metrics, after_metrics, trigger)


def gives_intervals(reg: RegisterParams, version: str) -> bool:
    """Whether a registered version prices with intervals (its signature takes the interval parameters)."""
    params = mlflow.models.get_model_info(f"models:/{reg.model_name}/{version}").signature.params
    return params is not None and pyfunc_flavor.INTERVALS_PARAM in {param.name for param in params.params}


def _below_floor(metrics: dict[str, Any], champion: ModelVersion | None, trigger: str) -> Decision:
    before = str(champion.version) if champion else None
    reason = f"below the quality floor: test metrics {metrics['test']} vs floor {metrics['quality_floor']}"
    return Decision("reject", None, reason, before, before, {}, metrics["test"], trigger)


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
    """Whether the tracking store has ``@champion`` and it is the BentoML store's latest model."""
    champion = champion_version(MlflowClient(), params.register_)
    return champion is not None and is_served(params.register_, str(champion.version))


def compile_champion(bento_tag: str, cache_dir: Path | None) -> list[Path]:
    """Compile the champion's forests for this machine, so a service started here serves compiled code at once.

    The forests are the price model's and its intervals' scale model, when they are
    LightGBM. Returns the artefacts compiled; none with compilation disabled, and
    none for a forest whose compilation failed (the service then serves its booster
    and says why).
    """
    if cache_dir is None:
        return []
    model = load_mlflow_model(bentoml.models.get(bento_tag).path_of(MLFLOW_MODEL_FOLDER))
    forests = [fitted_pipeline(model)[-1], *([model.scale_] if isinstance(model, ConformalRegressor) else [])]
    artefacts = []
    for forest in forests:
        if not isinstance(forest, LGBMModel):
            continue
        start = time.perf_counter()
        try:
            artefacts.append(compile_forest(forest.booster_.model_to_string(), cache_dir))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log.warning("a forest of the champion did not compile; services will serve its booster: %s", error)
            continue
        log.info("compiled forest %s ready in %.1f s", artefacts[-1], time.perf_counter() - start)
    return artefacts


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
    except NoChampionError as exc:
        log.error("%s", exc)
        sys.exit(1)
    path = params.register_.registration_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registration, indent=2) + "\n")
    compile_champion(registration["bento_model"], HousingSettings().compiled_dir)


if __name__ == "__main__":
    main()
