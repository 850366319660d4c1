"""MLflow's server with its registry in PostgreSQL and its artifacts in SeaweedFS's S3, as the local setup runs it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import mlflow
import pytest
from mlflow import MlflowClient

from operations.local_stores import free_port, shared_stores
from tests.conftest import tracking_store


@pytest.fixture(scope="module")
def stores() -> Iterator[dict[str, str]]:
    folder = Path(tempfile.mkdtemp(prefix="housing-shared-"))
    folder.chmod(0o755)  # the postgres user works inside
    try:
        with shared_stores(folder, free_port(), free_port()) as env:
            yield env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_runs_and_versions_go_to_postgres_and_artifacts_to_s3(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, stores[key])
    with tracking_store(stores["MLFLOW_TRACKING_URI"]):
        mlflow.set_experiment("shared-stores")
        with mlflow.start_run() as run:
            mlflow.log_text("a house", "notes/house.txt")
        client = MlflowClient()
        client.create_registered_model("shared-stores-model")
        version = client.create_model_version("shared-stores-model", f"runs:/{run.info.run_id}/notes", run.info.run_id)
        client.set_registered_model_alias("shared-stores-model", "champion", version.version)
        assert client.get_model_version_by_alias("shared-stores-model", "champion").run_id == run.info.run_id
        assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/house.txt") == "a house"
    s3 = boto3.client("s3", endpoint_url=stores["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/notes/house.txt") for key in keys), keys
