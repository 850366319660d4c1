"""The served model's fast path prices exactly as the fitted pipeline does."""

from __future__ import annotations

import bentoml
import numpy as np
import pandas as pd

from devtools.houses import request_records
from housing.params import Params
from housing.settings import HousingSettings
from load_tests.benchmark import batch_stages, served_champion
from service.api_models import House, columns_of
from service.model import PARALLEL_ROWS, fast_predict, forest_runtime, load_served_model
from training.estimators import build_model


def test_fast_path_equals_the_pipeline(champion: dict, test_rows: pd.DataFrame) -> None:
    served = load_served_model(bentoml.models.get("housing-price-model:latest"), HousingSettings().compiled_dir)
    assert served.forest is not None  # the champion is a LightGBM pipeline
    assert served.forest.wait(600)
    assert (served.forest.runtime, served.forest.problem) == ("lleaves", None)
    one = columns_of([House(**request_records(test_rows.head(1))[0])])
    np.testing.assert_allclose(served.predict(one), served.estimator.predict(test_rows.head(1)), rtol=1e-9)
    # A batch large enough to use every core, rows repeated past PARALLEL_ROWS.
    big = pd.concat([test_rows] * (PARALLEL_ROWS // len(test_rows) + 1), ignore_index=True)
    columns = {name: big[name].tolist() for name in big.columns}
    np.testing.assert_allclose(served.predict(columns), served.estimator.predict(big), rtol=1e-9)
    # The intervals' scale model is compiled too, and bounds it gives equal the registered model's own.
    assert served.scale_forest is not None
    assert served.scale_forest.wait(600)
    assert (served.scale_forest.runtime, served.scale_forest.problem) == ("lleaves", None)
    _, bounds = served.predict_interval(columns)
    np.testing.assert_allclose(bounds, served.estimator.predict_interval(big), rtol=1e-9)
    # Without compiled code the booster serves the same bounds.
    plain = load_served_model(bentoml.models.get("housing-price-model:latest"), None)
    assert plain.scale_forest is not None
    assert (plain.scale_forest.runtime, plain.scale_forest.problem) == ("lightgbm", "compilation disabled")
    np.testing.assert_allclose(plain.predict_interval(one)[1], served.predict_interval(one)[1], rtol=1e-9)


def test_other_models_keep_their_own_predict(params: Params, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    linear = build_model({"model": "ridge", "alpha": 1.0}, params.features, "none", seed=0).fit(X_sample, y_sample)
    assert forest_runtime(linear, None) is None


def test_a_log_target_forest_prices_in_usd(params: Params, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    model = build_model({"model": "lightgbm", "n_estimators": 30}, params.features, "log", seed=0).fit(
        X_sample, y_sample
    )
    forest = forest_runtime(model, None)
    assert forest is not None
    columns = {name: X_sample[name].tolist() for name in X_sample.columns}
    np.testing.assert_allclose(fast_predict(model, forest)(columns), model.predict(X_sample), rtol=1e-12)


def test_the_benchmarks_batch_stages_are_the_whole_computation(champion: dict, test_rows: pd.DataFrame) -> None:
    """`make bench` times a batch stage by stage; chained, the stages give the bounds the service gives."""
    served = served_champion()
    houses = request_records(test_rows.head(50))
    timings, bounds = batch_stages(served, houses, runs=1)
    assert list(timings) == ["validate", "columns", "features", "forest", "scale_model", "bounds"]
    assert all(ms > 0 for ms in timings.values())
    columns = columns_of([House(**house) for house in houses])
    np.testing.assert_array_equal(bounds, served.predict_interval(columns)[1])
