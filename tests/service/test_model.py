"""The served model's fast path prices exactly as the fitted pipeline does."""

from __future__ import annotations

import bentoml
import numpy as np
import pandas as pd

from housing.params import Params
from load_tests.benchmark import request_records
from service.api_models import House, columns_of
from service.model import PARALLEL_ROWS, fast_predict, load_served_model
from training.estimators import build_model


def test_fast_path_equals_the_pipeline(champion: dict, test_rows: pd.DataFrame) -> None:
    served = load_served_model(bentoml.models.get("housing-price-model:latest"))
    assert fast_predict(served.estimator) is not None  # the champion is a LightGBM pipeline
    one = columns_of([House(**request_records(test_rows.head(1))[0])])
    np.testing.assert_array_equal(served.predict(one), served.estimator.predict(test_rows.head(1)))
    # A batch large enough to use every core, rows repeated past PARALLEL_ROWS.
    big = pd.concat([test_rows] * (PARALLEL_ROWS // len(test_rows) + 1), ignore_index=True)
    columns = {name: big[name].tolist() for name in big.columns}
    np.testing.assert_array_equal(served.predict(columns), served.estimator.predict(big))


def test_other_models_keep_their_own_predict(params: Params, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    linear = build_model({"model": "ridge", "alpha": 1.0}, params.features, "none", seed=0).fit(X_sample, y_sample)
    assert fast_predict(linear) is None
