"""The served model: the registered champion, loaded from the BentoML model store."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from housing.columns import read_columns
from housing.compiled_forest import ForestRuntime
from housing.explain import Explanation, explain_forest, folding_matrix
from housing.model_card import CARD_FILE, ModelCard
from housing.model_format import (
    MLFLOW_MODEL_FOLDER,
    ModelLabels,
    ModelMetadata,
    extra_file,
    fitted_pipeline,
    load_mlflow_model,
    reference_of,
    target_inverse,
)
from service import prometheus_metrics
from service.api_models import EXAMPLE_HOUSE, House, ModelInfo, columns_of

if TYPE_CHECKING:  # the model's libraries load with the model (see housing.model_format)
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

    from housing.conformal import ConformalRegressor, Spread

PARALLEL_ROWS = 1000
# Explaining a house takes LightGBM 6-8 ms (TreeSHAP walks every path of every tree), what the compiled forest takes
# to price about a thousand: from this many houses (some 50 ms of one core) an explanation takes every core.
PARALLEL_EXPLAIN_ROWS = 8
# Probe houses on which a compiled forest must price as the booster does: the example house moved
# across the state and through the income range (rows of every ocean_proximity value would not add much).
PROBE_SHIFTS = [
    (dlon, dlat, income) for dlon in (-1.5, 0.0, 4.0) for dlat in (-4.0, 0.0, 1.5) for income in (1.0, 8.3, 15.0)
]


@dataclass(frozen=True)
class ServedModel:
    """The fitted pipeline (raw records in, USD out) and what the registry says about it."""

    estimator: BaseEstimator
    # The estimator's predict, or the same computation without its per-call overhead (see fast_predict).
    predictor: Callable[..., Any]
    info: ModelInfo
    # The training data's profile for drift detection (housing.drift_stats), saved with the model.
    reference: dict[str, Any]
    # Predict-time arguments that let the model use every core on a large batch.
    parallel: dict[str, Any] = field(default_factory=dict)
    # The forest's runtime (compiled code or the LightGBM booster); None for models of other families.
    forest: ForestRuntime | None = None
    # The prices' conformal intervals (housing.conformal); None for a version registered without them.
    intervals: ConformalRegressor | None = None
    # The intervals' scale model, compiled like the forest (None without intervals).
    scale_forest: ForestRuntime | None = None
    # The version's model card (housing.model_card); None for a version registered without one.
    card: ModelCard | None = None

    def identity(self) -> dict[str, str]:
        """The name and version a prediction response carries."""
        return {"model_name": self.info.model_name, "model_version": self.info.model_version}

    def predict(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Prices in USD, shape (n_houses,), of houses given as columns (see ``columns_of``).

        The columns go through the training pipeline's own feature code. Batches of
        ``PARALLEL_ROWS`` or more use all cores; small requests stay on one, so
        concurrent requests do not fight over threads.
        """
        return np.asarray(self.predictor(columns, **self.threads_for(columns)), dtype=float)

    def predict_interval(
        self, columns: Mapping[str, Sequence[Any]], coverage: float | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Prices (n_houses,) and their bounds (n_houses, 2) in USD at ``coverage`` (default: the model's).

        The bounds are None for a model registered without intervals.
        """
        prices, spread = self.price_and_spread(columns)
        return prices, self.bounds(prices, spread, coverage)

    def price_and_spread(self, columns: Mapping[str, Sequence[Any]]) -> tuple[np.ndarray, Spread | None]:
        """Prices (USD, shape (n_houses,)) and their intervals' spread: the scale model's output for them and
        each house's calibration group (housing.conformal; None without intervals).

        The bounds at any coverage are made of these two (:meth:`bounds`).
        """
        columns = read_columns(columns)  # the price and the scale model both read them
        prices = self.predict(columns)
        if self.intervals is None or self.scale_forest is None:
            return prices, None
        inputs = self.intervals.scale_inputs(columns, prices)
        scale = self.scale_forest.predict(inputs, num_threads=self.threads_for(columns).get("num_threads", 1))
        return prices, self.intervals.spread(columns, scale)

    def bounds(self, prices: np.ndarray, spread: Spread | None, coverage: float | None = None) -> np.ndarray | None:
        """Bounds (n_houses, 2) in USD at ``coverage`` from :meth:`price_and_spread`; None without intervals."""
        return None if self.intervals is None or spread is None else self.intervals.bounds(prices, spread, coverage)

    def threads_for(self, columns: Mapping[str, Sequence[Any]], from_rows: int = PARALLEL_ROWS) -> dict[str, Any]:
        """The forests' predict-time arguments for these houses: every core from ``from_rows`` houses, else none."""
        rows = len(next(iter(columns.values())))
        return self.parallel if rows >= from_rows else {}

    def explain(self, columns: Mapping[str, Sequence[Any]]) -> Explanation:
        """Each raw input's contribution (USD) to the prices :meth:`predict` gives these houses (housing.explain).

        The prices are :meth:`predict`'s (the same features through the same forest runtime, computed
        once for both), the values LightGBM's exact TreeSHAP (``pred_contrib``) of the same forest,
        on every core from ``PARALLEL_EXPLAIN_ROWS`` houses. Raises :class:`NotExplainableError`
        for a model of another family.
        """
        if self.forest is None:
            raise NotExplainableError(not_explainable(self))
        pipeline, inverse, fold = self._explaining
        features = _features(pipeline, read_columns(columns))
        prices = forest_prices(self.forest, features, inverse, **self.threads_for(columns))
        threads = self.threads_for(columns, PARALLEL_EXPLAIN_ROWS).get("num_threads", 1)
        return explain_forest(self.forest.booster, features, fold, prices, inverse, threads)

    @cached_property
    def _explaining(self) -> tuple[Pipeline, Callable[[np.ndarray], np.ndarray] | None, np.ndarray]:
        """What :meth:`explain` needs of the model besides the forest, worked out on its first call."""
        pipeline = fitted_pipeline(self.estimator)
        fold = folding_matrix(pipeline.named_steps["features"].get_feature_sources_out())
        return pipeline, target_inverse(self.estimator), fold


class NotExplainableError(ValueError):
    """The served model has no exact per-input explanation (only LightGBM forests do)."""


def not_explainable(model: ServedModel) -> str:
    """Why ``model`` cannot explain its prices: the error a client gets."""
    return (
        f"model: explanations need a LightGBM model; the served model {model.info.model_name} "
        f"v{model.info.model_version} is of the {model.info.family or 'unknown'} family"
    )


def load_served_model(bento_model: bentoml.Model, compiled_dir: Path | None = None) -> ServedModel:
    """Load the MLflow model inside ``bento_model`` and warm it up.

    The model file is loaded directly (not through pyfunc's per-call schema
    enforcement), which keeps single predictions fast; the request models already
    validate every field, and a test proves both paths give the same prices. A
    LightGBM forest runs as compiled code from ``compiled_dir`` once that is ready
    (housing.compiled_forest), as the booster until then or if it cannot be.
    """
    from housing.conformal import ConformalRegressor

    estimator = load_mlflow_model(bento_model.path_of(MLFLOW_MODEL_FOLDER))
    meta = ModelMetadata.model_validate(bento_model.info.metadata)
    labels = ModelLabels.model_validate(bento_model.info.labels)
    forest = forest_runtime(estimator, compiled_dir, partial(_report_runtime, meta.mlflow_version, "price"))
    intervals = estimator if isinstance(estimator, ConformalRegressor) else None
    scale_forest = (
        None
        if intervals is None
        else scale_runtime(intervals, compiled_dir, partial(_report_runtime, meta.mlflow_version, "interval_scale"))
    )
    served = ServedModel(
        estimator=estimator,
        predictor=estimator.predict if forest is None else fast_predict(estimator, forest),
        reference=reference_of(bento_model),
        parallel={"num_threads": os.cpu_count() or 1} if forest is not None else {},
        forest=forest,
        intervals=intervals,
        scale_forest=scale_forest,
        card=card_of(bento_model, meta),
        info=ModelInfo(
            model_name=meta.mlflow_model,
            model_version=meta.mlflow_version,
            run_id=meta.mlflow_run_id,
            bento_tag=str(bento_model.tag),
            family=labels.family,
            data_version=meta.data_version,
            test_metrics=meta.test_metrics,
            cv_metrics=meta.cv_metrics,
            feature_schema=House.model_json_schema(),
            interval_coverage=None if intervals is None else intervals.coverage,
        ),
    )
    for runtime in (forest, scale_forest):
        if runtime is not None:
            runtime.start()
    # The first call builds the neighbour index; do it before traffic arrives.
    served.predict(columns_of([House(**EXAMPLE_HOUSE)]))
    return served


def load_bento_model(bento_tag: str, compiled_dir: Path | None = None) -> ServedModel:
    """:func:`load_served_model` of the BentoML store's model ``bento_tag``."""
    return load_served_model(bentoml.models.get(bento_tag), compiled_dir)


def probe_houses() -> list[dict[str, Any]]:
    """The example house moved across the state and through the income range (see ``PROBE_SHIFTS``)."""
    return [
        {**EXAMPLE_HOUSE, "longitude": EXAMPLE_HOUSE["longitude"] + dlon, "latitude": EXAMPLE_HOUSE["latitude"] + dlat,
         "median_income": income}
        for dlon, dlat, income in PROBE_SHIFTS
    ]  # fmt: skip


def forest_runtime(
    estimator: BaseEstimator, compiled_dir: Path | None, on_change: Callable[[ForestRuntime], None] | None = None
) -> ForestRuntime | None:
    """The runtime of a pipeline ending in LightGBM, probed on houses across the state; None for other models."""
    from lightgbm import LGBMModel

    pipeline = fitted_pipeline(estimator)
    if not isinstance(pipeline[-1], LGBMModel):
        return None
    features = _features(pipeline, columns_of([House(**house) for house in probe_houses()]))
    return ForestRuntime(pipeline[-1].booster_, compiled_dir, features, on_change)


def scale_runtime(
    intervals: ConformalRegressor, compiled_dir: Path | None, on_change: Callable[[ForestRuntime], None] | None = None
) -> ForestRuntime:
    """The runtime of the intervals' scale model (a small LightGBM forest), probed like the price forest."""
    probe = columns_of([House(**house) for house in probe_houses()])
    inputs = intervals.scale_inputs(probe, intervals.predict(probe))
    return ForestRuntime(intervals.scale_.booster_, compiled_dir, inputs, on_change)


def _features(pipeline: Pipeline, columns: Mapping[str, Sequence[Any]]) -> Any:
    """The model's inputs: ``columns`` through every step of ``pipeline`` but its last (the regressor)."""
    features: Any = columns
    for _, step in pipeline.steps[:-1]:
        features = step.transform(features)
    return features


def _report_runtime(model_version: str, name: str, forest: ForestRuntime) -> None:
    prometheus_metrics.FOREST_COMPILED.labels(model_version, name).set(int(forest.runtime == "lleaves"))


def fast_predict(estimator: BaseEstimator, forest: ForestRuntime) -> Callable[..., np.ndarray]:
    """A LightGBM pipeline's steps called directly, its forest on ``forest``, its target transform undone.

    LightGBM's scikit-learn wrapper re-derives its parameters (get_params,
    deepcopy, signature inspection) and re-validates the array on every call:
    0.6 ms of a single record's 1.4 ms. The forest computes the same prices from
    the same features; a test holds the two paths equal.
    """
    pipeline = fitted_pipeline(estimator)
    inverse = target_inverse(estimator)

    def predict(columns: Mapping[str, Sequence[Any]], num_threads: int = 1) -> np.ndarray:
        return forest_prices(forest, _features(pipeline, columns), inverse, num_threads)

    return predict


def forest_prices(
    forest: ForestRuntime,
    features: np.ndarray,
    inverse: Callable[[np.ndarray], np.ndarray] | None,
    num_threads: int = 1,
) -> np.ndarray:
    """Prices in USD, shape (n_houses,), of the model's inputs (n_houses, n_features): the target transform undone."""
    scores = forest.predict(features, num_threads=num_threads)
    return np.asarray(inverse(scores) if inverse is not None else scores)


def card_of(bento_model: bentoml.Model, meta: ModelMetadata) -> ModelCard | None:
    """The model card logged beside the model file, naming its registered version; None if it has none."""
    path = Path(bento_model.path_of(MLFLOW_MODEL_FOLDER)) / extra_file(CARD_FILE)
    if not path.is_file():
        return None
    return ModelCard.model_validate_json(path.read_text()).with_version(meta.mlflow_model, meta.mlflow_version)
