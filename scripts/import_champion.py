"""Put the registry's ``@champion`` into the BentoML store, as a promotion does: the release packages it unretrained.

    MLFLOW_TRACKING_URI=... python -m scripts.import_champion [--project-dir DIR]

The registry is the one MLflow's environment names (MLFLOW_TRACKING_URI and its credentials); the model
and alias names come from the project's params.yaml. The champion is imported through
housing.registry (the labels and metadata the service reads) and becomes the store's latest model,
which `bentoml build` pins. Prints the version and the BentoML tag; exits 1 when there is no champion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from housing.params import load_params
from housing.registry import champion_version, served_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-dir", type=Path, default=Path(), help="the project whose params.yaml names it")
    args = parser.parse_args(argv)
    reg = load_params(args.project_dir / "params.yaml").register_
    client = MlflowClient()
    champion = champion_version(client, reg)
    if champion is None:
        print(f"no @{reg.alias} for {reg.model_name} in {mlflow.get_tracking_uri()}", file=sys.stderr)
        return 1
    bento_model = served_model(client, reg, str(champion.version))
    imported = {"model_name": reg.model_name, "version": str(champion.version), "bento_model": str(bento_model.tag)}
    print(json.dumps(imported))
    return 0


if __name__ == "__main__":
    sys.exit(main())
