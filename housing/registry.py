"""The model registry as both sides reach it: where MLflow's store is, which version is champion, the BentoML copy.

The pipeline promotes and imports (training.register, training.champion); a
service replica that follows the champion (``HOUSING_FOLLOW_CHAMPION``) imports
the same way into its own BentoML store. One definition of each, here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import bentoml
from bentoml.exceptions import NotFound

from housing.columns import FEATURE_COLUMNS
from housing.model_format import PROFILE_TAG, ModelLabels, ModelMetadata

if TYPE_CHECKING:  # MLflow is imported where it is used (about 1 s): see housing.model_format
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


class RegisteredModel(Protocol):
    """What names a registered model: its MLflow name, the champion's alias, its name in the BentoML store.

    ``register`` in params.yaml (housing.params.RegisterParams) is one.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def alias(self) -> str: ...

    @property
    def bento_model_name(self) -> str: ...


def tracking_uri(project_dir: Path) -> str:
    """MLflow's store: ``MLFLOW_TRACKING_URI`` (a tracking server, for shared stores), else the project's
    own ``mlflow.db`` (where the pipeline run in ``project_dir`` keeps it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_dir / 'mlflow.db').resolve()}"


def store_exists(uri: str) -> bool:
    """Whether the store at ``uri`` exists: for a SQLite file, the file; a server is taken to exist.

    Readers check first because opening a SQLite store that is not there creates and migrates it, which
    only the pipeline should do (two readers migrating one new file at once can leave it half-migrated).
    """
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def champion_version(client: MlflowClient, reg: RegisteredModel) -> ModelVersion | None:
    """The version the ``@champion`` alias points at, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(reg.model_name, reg.alias)
    except MlflowException:
        return None


def tagged_metrics(version: ModelVersion, prefix: str = "test_") -> dict[str, float]:
    """The metrics register.py tagged the version with, e.g. ``test_rmse`` -> ``{"rmse": ...}``."""
    return {key.removeprefix(prefix): float(value) for key, value in version.tags.items() if key.startswith(prefix)}


def import_version(client: MlflowClient, reg: RegisteredModel, version: str) -> bentoml.Model:
    """Copy a registered version (from the registry's artifact store) into the BentoML store, labelled with
    its MLflow identity.

    The import is always a new BentoML model, so the champion is the store's
    ``latest`` even when an older version comes back by rollback.
    """
    import mlflow

    mv = client.get_model_version(reg.model_name, version)
    model: bentoml.Model = bentoml.mlflow.import_model(
        reg.bento_model_name,
        model_uri=f"models:/{reg.model_name}/{version}",
        labels=ModelLabels(
            mlflow_model=reg.model_name,
            mlflow_version=version,
            mlflow_alias=reg.alias,
            family=mv.tags.get("family", ""),
        ).model_dump(),
        metadata=ModelMetadata(
            mlflow_model=reg.model_name,
            mlflow_version=version,
            mlflow_run_id=str(mv.run_id),
            tracking_uri=mlflow.get_tracking_uri(),
            data_version=mv.tags.get("data_version", ""),
            test_metrics=tagged_metrics(mv),
            cv_metrics=tagged_metrics(mv, "cv_"),
            feature_columns=list(FEATURE_COLUMNS),
            reference_profile=mv.tags[PROFILE_TAG],
        ).model_dump(),
    )
    return model


def served_model(client: MlflowClient, reg: RegisteredModel, version: str) -> bentoml.Model:
    """The BentoML store's latest model, made to be ``version`` (imported when it is not)."""
    latest = latest_model(reg)
    if latest is not None and latest.info.labels.get("mlflow_version") == version:
        return latest
    return import_version(client, reg, version)


def is_served(reg: RegisteredModel, version: str) -> bool:
    """Whether the BentoML store's latest model is ``version``."""
    latest = latest_model(reg)
    return latest is not None and latest.info.labels.get("mlflow_version") == version


def latest_model(reg: RegisteredModel) -> bentoml.Model | None:
    """The BentoML store's latest model of the name; None in a store that never held it."""
    try:
        return bentoml.models.get(f"{reg.bento_model_name}:latest")
    except NotFound:
        return None
