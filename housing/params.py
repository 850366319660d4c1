"""The typed contents of ``params.yaml``: every knob of the pipeline, and the registry names the service reads.

``params.yaml`` holds every knob (DVC tracks it); the environment only says
*where* things are (housing.settings). It is validated here once, at the edge,
so the steps can trust what they get.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from housing.settings import HousingSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Section):
    source: str
    raw_path: Path
    download_timeout_s: float = Field(gt=0)


class ValidateParams(_Section):
    max_missing_fraction: dict[str, float]
    max_duplicate_fraction: float = Field(ge=0, le=1)
    min_rows: int = Field(ge=1)
    report_path: Path


class PrepareParams(_Section):
    test_size: float = Field(gt=0, lt=1)
    seed: int
    income_bands: list[float] = Field(min_length=2)
    feedback_path: Path
    train_path: Path
    test_path: Path

    @field_validator("income_bands")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError("income_bands must be strictly increasing")
        return edges


class FeatureParams(_Section):
    neighbours: list[int] = Field(min_length=1)
    neighbour_folds: int = Field(ge=2)


class FamilyParams(_Section):
    """How one model family is searched.

    ``grid`` tries every combination, ``random`` draws ``n_iter`` of them, and
    ``optuna`` runs ``n_iter`` trials of Optuna's seeded TPE sampler over its one
    candidate, whose values may also be ranges (``{low, high, log}``).
    ``early_stopping_rounds`` (LightGBM) makes ``n_estimators`` a ceiling: each
    candidate gets the tree count with the lowest mean CV RMSE, its folds stopping
    once that many rounds brought no gain. ``first_trial`` (optuna) is the first
    point Optuna evaluates, the best one known, so a small budget cannot end below it.
    """

    search: Literal["grid", "random", "optuna"]
    n_iter: int | None = Field(default=None, ge=1)
    # Each candidate names a model and maps hyperparameters to a value or a list of values.
    candidates: list[dict[str, Any]] = Field(min_length=1)
    early_stopping_rounds: int | None = Field(default=None, ge=1)
    first_trial: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _optuna_has_one_space(self) -> FamilyParams:
        if self.search == "optuna" and (len(self.candidates) != 1 or self.n_iter is None):
            raise ValueError("an optuna search needs exactly one candidate (its search space) and n_iter trials")
        return self


class TrainParams(_Section):
    seed: int
    cv_folds: int = Field(ge=2)
    n_jobs: int
    target_transform: Literal["none", "log", "sqrt"]
    scoring: Literal["rmse", "mae", "r2"]
    model_path: Path
    results_path: Path
    # The chosen configuration alone (family, params, rows), which the refit stages read: it stays the same
    # file when a re-run chooses the same, so they do not run again.
    winner_path: Path
    families: dict[str, FamilyParams] = Field(min_length=1)


class IntervalParams(_Section):
    """The conformal intervals of the winning model (housing.conformal)."""

    coverage: float = Field(gt=0, lt=1)
    # Parameters of the LightGBM model of each house's absolute error.
    scale_model: dict[str, Any] = Field(default_factory=dict)
    # The fewest calibration houses an income band needs for a quantile of its own (else the pooled one).
    min_band_size: int = Field(ge=1)


class RefitParams(_Section):
    """The served model: the chosen configuration refitted on every labelled row (training.refit), and the
    repeated K-fold that measures what the refit gains and whether its intervals hold (training.refit_effect)."""

    # Serve the refit; false serves the training-split fit the decision scored.
    enabled: bool
    model_path: Path
    summary_path: Path
    # Folds and repeats of the measurement's K-fold over every labelled row.
    effect_folds: int = Field(ge=2)
    effect_repeats: int = Field(ge=1)
    effect_path: Path


class QualityFloor(_Section):
    min_r2: float
    max_rmse: float = Field(gt=0)


class EvaluateParams(_Section):
    quality_floor: QualityFloor
    metrics_path: Path
    report_path: Path
    figures_dir: Path


class DriftParams(_Section):
    # Recent logged houses compared with the training data, and the least that makes a verdict.
    window: int = Field(ge=1)
    min_rows: int = Field(ge=1)
    psi_threshold: float = Field(gt=0)
    p_value: float = Field(gt=0, lt=1)
    bins: int = Field(ge=2)
    sample_size: int = Field(ge=10)
    profile_path: Path


class RegisterParams(_Section):
    model_name: str
    alias: str
    experiment: str
    bento_model_name: str
    # Refuse to register a model whose test metrics miss evaluate.quality_floor.
    require_quality_floor: bool
    # A challenger replaces the champion only when its test RMSE is lower by more than this (USD).
    min_improvement_usd: float = Field(ge=0)
    # The MLflow experiment that records every promotion, refusal and rollback.
    decisions_experiment: str
    registration_path: Path
    model_card_path: Path


class RetrainParams(_Section):
    """When to retrain: drift of the served inputs, or accuracy lost on feedback."""

    # Retrain when any feature of the latest drift window drifted (thresholds: the drift section).
    on_drift: bool
    # Or when the served version's RMSE over at least min_feedback houses with feedback
    # passes max_rmse_ratio times its test RMSE.
    min_feedback: int = Field(ge=1)
    max_rmse_ratio: float = Field(gt=0)


class ShadowParams(_Section):
    """When a challenger priced in shadow may replace the champion (housing.shadow)."""

    # At least this many shadowed houses with feedback, on which the challenger's squared errors are lower than the
    # champion's by a one-sided Wilcoxon signed-rank test at p below p_value.
    min_labelled: int = Field(ge=1)
    p_value: float = Field(gt=0, lt=1)


class Params(_Section):
    """The whole of ``params.yaml``."""

    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    prepare: PrepareParams
    features: FeatureParams
    train: TrainParams
    intervals: IntervalParams
    refit: RefitParams
    evaluate: EvaluateParams
    register_: RegisterParams = Field(alias="register")
    drift: DriftParams
    retrain: RetrainParams
    shadow: ShadowParams

    def data_source(self, settings: HousingSettings) -> str:
        """The effective data source: the environment's override, else params.yaml's."""
        return settings.data_source or self.data.source


def load_params(path: Path | str | None = None) -> Params:
    """Read and validate ``params.yaml`` (default: ``HousingSettings().params_path``)."""
    path = Path(path) if path is not None else HousingSettings().params_path
    with path.open() as fh:
        return Params.model_validate(yaml.safe_load(fh))
