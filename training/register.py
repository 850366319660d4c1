"""Register: log the served model to MLflow and promote it to ``@champion`` only if it is better.

The served model (training.refit: the winner refitted on every labelled row) is
logged on the winning family's parent run (so the version links to the search
that produced it): its skops file (loaded with an explicit trust list) as a
pyfunc model of housing.pyfunc_flavor, with a signature, interval parameters
and an input example of raw records. The training-split fit the evaluate stage
scored is logged on the same run as the version's *evidence* (a pyfunc model of
its own, named by the version's ``evidence_model`` tag). The registered version
is tagged with the evidence's metrics, the data version (the DVC/MD5 hash of the
raw CSV, and of the feedback), what the served model was fitted on and its row
count; its model card (training.card_builder) is logged beside the model file and
is the version's description.
It then challenges the champion on the current test split (housing.registry
records the decision). The decision compares training-split fits: the
challenger's evidence with the champion's, both priced on the same test houses
(the refit learned them, so its own figures prove nothing); the served model
itself must only load and price every house. The champion, new or kept, is the
BentoML store's latest model, which the service loads.
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
from training.refit import TRAINING_SPLIT, labelled_rows
from training.scoring import regression_metrics

log = logging.getLogger(__name__)

# What the logged model needs to load, beyond the project's own package.
RUNTIME_PACKAGES = ("scikit-learn", "lightgbm", "numpy", "pandas", "scipy", "skops")
# The logged model the decision scores: the training-split fit, on the version's run beside the served model.
EVIDENCE_NAME = "evidence"
# The registered version's tag naming its evidence (a models:/ URI). A version without it serves its
# training-split fit (registered before the refit, or with refit.enabled false): it is its own evidence.
EVIDENCE_TAG = "evidence_model"


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
    """Profile the served model's training inputs for drift detection, with the thresholds to judge by."""
    drift = params.drift
    X, _ = labelled_rows(params) if params.refit.enabled else load_split(params.prepare.train_path)
    profile = reference_profile(X, bins=drift.bins, sample_size=drift.sample_size, seed=params.train.seed)
    profile["thresholds"] = {"psi": drift.psi_threshold, "p_value": drift.p_value}
    profile["window"] = {"rows": drift.window, "min_rows": drift.min_rows}
    drift.profile_path.parent.mkdir(parents=True, exist_ok=True)
    drift.profile_path.write_text(json.dumps(profile) + "\n")
    return drift.profile_path


def version_tags(
    metrics: dict[str, Any], served: dict[str, Any], data_versions: dict[str, str], profile: Path
) -> dict[str, str]:
    """The tags of a registered version: the decision's test and CV figures (its training-split fit's), family,
    what the served model was fitted on (``served``: reports/refit.json) and how many rows, the data versions
    (``data_version`` of the raw CSV, ``feedback_version``), where its drift profile is."""
    winner = metrics["winner"]
    tags = {f"test_{name}": f"{value:.6g}" for name, value in metrics["test"].items()}
    tags |= {f"cv_{name}": f"{value:.6g}" for name, value in metrics["families"][winner]["cv"].items()}
    tags |= {"served_fit": served["served_fit"], "fit_rows": str(served["rows"])}
    return tags | {"family": winner, **data_versions, PROFILE_TAG: extra_file(profile)}


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
    model_uri = f"models:/{reg.model_name}/{champion.version!s}"
    return {
        "model_name": reg.model_name,
        "version": str(champion.version),
        "alias": reg.alias,
        "run_id": champion.run_id,
        "model_uri": model_uri,
        "tracking_uri": mlflow.get_tracking_uri(),
        "data_version": champion.tags.get("data_version", ""),
        "feedback_version": champion.tags.get("feedback_version", ""),
        "bento_model": str(bento_model.tag),
        # What the served model learned from; a champion registered before the refit served its training split.
        "served_fit": champion.tags.get("served_fit", TRAINING_SPLIT),
        "fit_rows": int(champion.tags["fit_rows"]) if "fit_rows" in champion.tags else None,
        # The fit the decision scored, and its test figures.
        "evidence_model": champion.tags.get(EVIDENCE_TAG, model_uri),
        "test": tagged_metrics(champion),
        "decision": decision.as_dict(),
    }


def log_version(client: MlflowClient, params: Params, metrics: dict[str, Any]) -> str:
    """Log the served model and its evidence on the search run, register the served one; return the version."""
    reg = params.register_
    data_versions = {
        "data_version": file_md5(params.data.raw_path),
        "feedback_version": file_md5(params.prepare.feedback_path),
    }
    served = json.loads(params.refit.summary_path.read_text())
    extra: dict[str, Any] = {
        "input_example": input_example(params.prepare.test_path),
        "pip_requirements": runtime_requirements(),
    }
    with _winner_run(client, metrics):
        mlflow.log_metrics({f"test_{name}": value for name, value in metrics["test"].items()})
        mlflow.set_tags({"data_version": data_versions["data_version"], "role": "challenger"})
        reports = (params.evaluate.metrics_path, params.evaluate.report_path, params.validate_.report_path,
                   params.refit.summary_path, params.refit.effect_path)  # fmt: skip
        for report in reports:
            mlflow.log_artifact(str(report), artifact_path="reports")
        card = build_card(params, metrics, data_versions["data_version"])
        evidence = (
            None
            if served["served_fit"] == TRAINING_SPLIT
            else log_model_file(params.train.model_path, None, name=EVIDENCE_NAME, **extra)
        )
        info = log_model_file(
            params.refit.model_path,
            reg.model_name,
            beside=[write_reference_profile(params), write_card(card, reg.model_card_path)],
            **extra,
        )
    model_version = str(info.registered_model_version)
    client.update_model_version(
        reg.model_name, model_version, description=card.with_version(reg.model_name, model_version).to_markdown()
    )
    tags = version_tags(metrics, served, data_versions, params.drift.profile_path)
    for key, value in (tags | ({} if evidence is None else {EVIDENCE_TAG: evidence.model_uri})).items():
        client.set_model_version_tag(reg.model_name, model_version, key, value)
    return model_version


def runtime_requirements() -> list[str]:
    """The served model's pinned packages. Given, MLflow need not infer them: inferring loads the model in a
    subprocess for every logged model."""
    return [f"{package}=={version(package)}" for package in RUNTIME_PACKAGES]


def log_model_file(
    path: Path, model_name: str | None, beside: Sequence[Path] = (), name: str = "model", **extra: Any
) -> ModelInfo:
    """Log the model file at ``path`` in the active run as a pyfunc model ``name`` of housing.pyfunc_flavor;
    register it as a version of ``model_name`` (None: logged only).

    The files ``beside`` go in the model's folder with it (see housing.model_format.extra_file); ``extra`` goes
    to ``mlflow.pyfunc.log_model`` (input example, requirements).
    """
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / PurePosixPath(MODEL_DATA_FOLDER).name
        folder.mkdir()
        for source, file_name in [(path, MODEL_FILE), *((file, file.name) for file in beside)]:
            shutil.copyfile(source, folder / file_name)
        return mlflow.pyfunc.log_model(
            name=name,
            loader_module=pyfunc_flavor.__name__,
            data_path=str(folder),
            signature=signature(getattr(load_model(path), "coverage", None)),
            registered_model_name=model_name,
            **extra,
        )


def score_model(model_uri: str, X: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Test metrics of a logged model, loaded back from MLflow as the service would.

    Raises when the model does not load or prices any house with a non-finite value.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    pred = np.asarray(model.predict(X), dtype=float)
    if pred.shape != y.shape or not np.isfinite(pred).all():
        raise ValueError(f"{int((~np.isfinite(pred)).sum())} non-finite prices of {len(pred)}")
    return regression_metrics(y, pred)


def judged_metrics(
    client: MlflowClient, reg: RegisterParams, version: str, X: pd.DataFrame, y: np.ndarray
) -> dict[str, float]:
    """The test metrics a registered version is judged by: its training-split fit's.

    The served model is loaded from the registry and must price every house with a finite value. When it is a
    refit it learned the test houses, so the version's evidence (its training-split fit, ``evidence_model``)
    is scored instead of it; a version without evidence serves its training-split fit and is scored itself.
    Raises when either does not load or prices a house with a non-finite value.
    """
    served = score_model(f"models:/{reg.model_name}/{version}", X, y)
    evidence = client.get_model_version(reg.model_name, version).tags.get(EVIDENCE_TAG)
    return served if evidence is None else score_model(evidence, X, y)


def challenge(
    client: MlflowClient,
    reg: RegisterParams,
    version: str,
    champion: ModelVersion | None,
    X: pd.DataFrame,
    y: np.ndarray,
    trigger: str,
) -> Decision:
    """Decide whether ``version`` replaces ``champion``: their training-split fits scored on the same test houses
    (X, y); see :func:`judged_metrics`."""
    before = str(champion.version) if champion else None
    try:
        after_metrics = judged_metrics(client, reg, version, X, y)
    except Exception as exc:  # any failure to load or predict makes the challenger unusable
        return Decision("reject", version, f"broken: {type(exc).__name__}: {exc}", before, before, trigger=trigger)
    if champion is None:
        return Decision("promote", version, "first champion", None, version, {}, after_metrics, trigger)
    try:
        before_metrics = judged_metrics(client, reg, str(champion.version), X, y)
    except Exception as exc:  # a champion that cannot price the test split must go
        reason = f"champion v{before} fails on the test data ({type(exc).__name__}: {exc})"
        return Decision("promote", version, reason, before, version, {}, after_metrics, trigger)
    gain = before_metrics["rmse"] - after_metrics["rmse"]
    compared = (
        f"RMSE {after_metrics['rmse']:,.0f} vs champion v{before}'s {before_metrics['rmse']:,.0f} USD "
        f"as training-split fits on the same {len(y):,} test houses"
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
    return pyfunc_flavor.offers_intervals(mlflow.models.get_model_info(f"models:/{reg.model_name}/{version}").signature)


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
    client = MlflowClient()
    champion = champion_version(client, params.register_)
    return champion is not None and is_served(client, params.register_, str(champion.version))


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
