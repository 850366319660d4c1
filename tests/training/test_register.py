from __future__ import annotations

import hashlib
from pathlib import Path

from training.register import file_md5, version_tags


def test_file_md5_is_the_plain_md5(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n1,2\n" * 100_000)
    assert file_md5(path) == hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_version_tags_carry_metrics_data_versions_the_served_fit_and_the_profile() -> None:
    metrics = {
        "winner": "gradient_boosting",
        "test": {"rmse": 40123.456, "mae": 25000.0, "r2": 0.8765},
        "families": {"gradient_boosting": {"cv": {"rmse": 40500.0, "r2": 0.87}}},
    }
    served = {"served_fit": "all_labelled_rows", "rows": 16512, "training_split_rows": 13209}
    data_versions = {"data_version": "abc123", "feedback_version": "def456"}
    assert version_tags(metrics, served, data_versions, Path("models/reference_profile.json")) == {
        "test_rmse": "40123.5",
        "test_mae": "25000",
        "test_r2": "0.8765",
        "cv_rmse": "40500",
        "cv_r2": "0.87",
        "served_fit": "all_labelled_rows",
        "fit_rows": "16512",
        "family": "gradient_boosting",
        "data_version": "abc123",
        "feedback_version": "def456",
        "reference_profile": "data/model/reference_profile.json",
    }
