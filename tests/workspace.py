"""A throwaway DVC workspace holding the pipeline code, for tests that run the real pipeline."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from devtools.paths import BIN, ROOT


@dataclass
class Workspace:
    path: Path
    env: dict[str, str]
    first_run: str

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            args, cwd=self.path, env=env or self.env, capture_output=True, text=True, timeout=600, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def python(self, code: str) -> str:
        return self.run(str(BIN / "python"), "-c", code).stdout


def small_params() -> dict:
    """params.yaml with every search shrunk to a couple of candidates."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["features"]["neighbours"] = [3, 10]
    params["train"]["cv_folds"] = 3
    families = params["train"]["families"]
    families["linear"]["candidates"] = [{"model": "ols"}, {"model": "ridge", "alpha": [1.0]}]
    families["decision_tree"]["candidates"] = [{"model": "tree", "max_depth": [6, 10], "min_samples_leaf": 10}]
    families["random_forest"].update(n_iter=1)
    families["random_forest"]["candidates"] = [{"model": "forest", "n_estimators": 20, "max_samples": 0.5}]
    families["gradient_boosting"].update(n_iter=2, early_stopping_rounds=20)
    families["gradient_boosting"]["candidates"] = [
        {"model": "lightgbm", "n_estimators": 150, "learning_rate": {"low": 0.05, "high": 0.1}, "num_leaves": 15,
         "target_transform": ["none", "log"]}
    ]  # fmt: skip
    # The refit's measurement: two folds once, the least that holds every row out.
    params["refit"].update(effect_folds=2, effect_repeats=1)
    params["evaluate"]["quality_floor"] = {"min_r2": 0.6, "max_rmse": 80_000}
    return params


def workspace_env(source: Path) -> dict[str, str]:
    """The environment a workspace's commands run in, reading their data from ``source``."""
    # The session's BentoML home (see conftest) is kept, so the service tests can serve this model.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOUSING_"))}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
        "HOUSING_DATA_SOURCE": str(source),
        "DVC_NO_ANALYTICS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    # The register stage compiles the champion's forest where the session's servers look for it.
    if "HOUSING_COMPILED_DIR" in os.environ:
        env["HOUSING_COMPILED_DIR"] = os.environ["HOUSING_COMPILED_DIR"]
    return env


def make_workspace(path: Path, source: Path, params: dict) -> dict[str, str]:
    """A fresh DVC project holding the pipeline code; returns its environment."""
    path.mkdir(parents=True)
    for package in ("housing", "training"):
        shutil.copytree(ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", path)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = workspace_env(source)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=path, env=env, check=True)
    return env


SAMPLE = "housing-sample.csv"
FIRST_RUN = "first-run.log"


def run_pipeline(root: Path, housing: pd.DataFrame) -> Workspace:
    """The whole pipeline on a 3,000-row sample, with a local DVC remote beside it."""
    source = root / SAMPLE
    housing.sample(3000, random_state=1).to_csv(source, index=False)
    path = root / "repo"
    ws = Workspace(path, make_workspace(path, source, small_params()), "")
    ws.run("dvc", "remote", "add", "-d", "storage", str(root / "remote"))
    result = ws.run("dvc", "repro")
    ws.first_run = result.stdout + result.stderr
    (root / FIRST_RUN).write_text(ws.first_run)
    return ws


def ran_pipeline(root: Path) -> Workspace | None:
    """The workspace :func:`run_pipeline` left in ``root`` (another test process's), or None before it finished."""
    if not (root / FIRST_RUN).is_file():
        return None
    return Workspace(root / "repo", workspace_env(root / SAMPLE), (root / FIRST_RUN).read_text())
