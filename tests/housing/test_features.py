from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from housing.columns import FEATURE_COLUMNS, OCEAN_PROXIMITY_CATEGORIES
from housing.features import (
    PARALLEL_QUERY_POINTS,
    FeatureEngineer,
    HousingFeatures,
    NeighbourFeatures,
    haversine_km,
    one_hot,
)


@pytest.fixture(scope="module")
def engineer(X_sample: pd.DataFrame) -> FeatureEngineer:
    return FeatureEngineer().fit(X_sample)


def test_output_shape_matches_feature_names(engineer: FeatureEngineer, X_sample: pd.DataFrame) -> None:
    out = engineer.transform(X_sample)
    assert out.shape == (len(X_sample), len(engineer.get_feature_names_out()))
    assert np.isfinite(out).all()


def test_missing_bedrooms_imputed_from_rooms(engineer: FeatureEngineer, X_sample: pd.DataFrame) -> None:
    known = X_sample["total_bedrooms"].notna() & (X_sample["total_rooms"] > 0)
    expected = np.median(X_sample.loc[known, "total_bedrooms"] / X_sample.loc[known, "total_rooms"])
    assert engineer.bedrooms_per_room_ == pytest.approx(expected)
    row = X_sample.head(1).copy()
    row["total_bedrooms"] = np.nan
    names = list(engineer.get_feature_names_out())
    out = engineer.transform(row)[0]
    assert out[names.index("total_bedrooms")] == pytest.approx(row["total_rooms"].iloc[0] * expected)
    assert out[names.index("bedrooms_per_room")] == pytest.approx(expected)


def test_ratios_and_encoding(engineer: FeatureEngineer) -> None:
    record = {
        "longitude": [-122.23],
        "latitude": [37.88],
        "housing_median_age": [41.0],
        "total_rooms": [880.0],
        "total_bedrooms": [129.0],
        "population": [322.0],
        "households": [126.0],
        "median_income": [8.3252],
        "ocean_proximity": ["NEAR BAY"],
    }
    names = list(engineer.get_feature_names_out())
    out = dict(zip(names, engineer.transform(record)[0], strict=True))
    assert out["rooms_per_household"] == pytest.approx(880 / 126)
    assert out["bedrooms_per_room"] == pytest.approx(129 / 880)
    assert out["population_per_household"] == pytest.approx(322 / 126)
    assert out["ocean_proximity_NEAR BAY"] == 1.0
    assert sum(out[f"ocean_proximity_{c}"] for c in OCEAN_PROXIMITY_CATEGORIES) == 1.0
    # This Berkeley block group lies about 20 km from downtown San Francisco.
    assert 19 < out["km_to_san_francisco"] < 22
    assert out["km_to_nearest_city"] == out["km_to_san_francisco"]


def test_zero_counts_stay_finite(engineer: FeatureEngineer, X_sample: pd.DataFrame) -> None:
    row = X_sample.head(1).copy()
    row[["total_rooms", "households", "total_bedrooms"]] = 0.0
    assert np.isfinite(engineer.transform(row)).all()


def test_mapping_and_frame_inputs_agree(engineer: FeatureEngineer, X_sample: pd.DataFrame) -> None:
    # The service passes columns as a mapping of arrays; training passes DataFrames.
    as_mapping = {name: X_sample[name].to_numpy() for name in FEATURE_COLUMNS}
    np.testing.assert_array_equal(engineer.transform(as_mapping), engineer.transform(X_sample))


def test_one_record_equals_its_row_in_a_batch(engineer: FeatureEngineer, X_sample: pd.DataFrame) -> None:
    batch = engineer.transform(X_sample.head(50))
    for i in (0, 17, 49):
        np.testing.assert_array_equal(engineer.transform(X_sample.iloc[[i]])[0], batch[i])


def test_unknown_category_encodes_to_zeros() -> None:
    encoded = one_hot(["INLAND", "MARS"], OCEAN_PROXIMITY_CATEGORIES)
    assert encoded.sum(axis=1).tolist() == [1.0, 0.0]


def test_haversine_known_distance() -> None:
    # Los Angeles to San Francisco: about 559 km great-circle.
    km = haversine_km(np.array([-118.2437]), np.array([34.0522]), -122.4194, 37.7749)
    assert km[0] == pytest.approx(559, abs=3)


def test_fit_requires_some_known_bedrooms(X_sample: pd.DataFrame) -> None:
    X = X_sample.head(5).assign(total_bedrooms=np.nan)
    with pytest.raises(ValueError, match="imputation"):
        FeatureEngineer().fit(X)


class TestNeighbourFeatures:
    def test_shape_and_names(self, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
        nf = NeighbourFeatures((3, 10), cv=4)
        out = nf.fit_transform(X_sample, y_sample)
        assert out.shape == (len(X_sample), len(nf.get_feature_names_out())) == (len(X_sample), 6)
        assert np.isfinite(out).all()

    def test_training_features_are_out_of_fold(self, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
        # A row's own target must not reach its own feature: changing it changes nothing for that row.
        nf = NeighbourFeatures((3,), cv=5, random_state=0)
        before = nf.fit_transform(X_sample, y_sample)
        bumped = y_sample.copy()
        bumped.iloc[0] *= 100
        after = NeighbourFeatures((3,), cv=5, random_state=0).fit_transform(X_sample, bumped)
        np.testing.assert_array_equal(before[0], after[0])
        assert not np.array_equal(before, after)  # ...but its neighbours in other folds do see it

    def test_lookup_uses_nearest_training_targets(self) -> None:
        X = pd.DataFrame(
            {"longitude": [-120.0, -120.01, -115.0, -115.01], "latitude": [35.0, 35.0, 33.0, 33.0]}
        ).assign(median_income=[1.0, 3.0, 5.0, 7.0])
        nf = NeighbourFeatures((2,), cv=2).fit(X, [100.0, 200.0, 900.0, 1100.0])
        out = nf.transform({"longitude": [-120.005], "latitude": [35.0], "median_income": [4.0]})[0]
        names = list(nf.get_feature_names_out())
        assert out[names.index("neighbours2_target")] == pytest.approx(150.0)
        assert out[names.index("neighbours2_income")] == pytest.approx(2.0)
        assert out[names.index("income_vs_neighbours")] == pytest.approx(2.0)
        assert out[names.index("km_to_nearest_neighbour")] == pytest.approx(0.455, abs=0.01)

    def test_refitting_uses_the_new_targets(self, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
        nf = NeighbourFeatures((3,), cv=3).fit(X_sample, y_sample)
        nf.transform(X_sample.head(5))
        doubled = y_sample * 2
        fresh = NeighbourFeatures((3,), cv=3)
        np.testing.assert_array_equal(nf.fit_transform(X_sample, doubled), fresh.fit_transform(X_sample, doubled))
        np.testing.assert_array_equal(nf.transform(X_sample.head(5)), fresh.transform(X_sample.head(5)))

    def test_a_large_batch_searched_on_every_core_equals_small_ones(
        self, X_sample: pd.DataFrame, y_sample: pd.Series
    ) -> None:
        nf = NeighbourFeatures((3, 10), cv=3).fit(X_sample, y_sample)
        copies = -(-PARALLEL_QUERY_POINTS // len(X_sample)) + 1
        rows = pd.concat([X_sample] * copies, ignore_index=True)
        assert len(rows) > PARALLEL_QUERY_POINTS
        chunks = [nf.transform(rows.iloc[start : start + 100]) for start in range(0, len(rows), 100)]
        np.testing.assert_array_equal(nf.transform(rows), np.vstack(chunks))

    def test_needs_more_rows_than_neighbours(self, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
        with pytest.raises(ValueError, match="more than 10"):
            NeighbourFeatures((10,)).fit(X_sample.head(10), y_sample.head(10))

    def test_skops_round_trip_rebuilds_the_tree(self, tmp_path, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
        nf = NeighbourFeatures((3, 10)).fit(X_sample, y_sample)
        path = tmp_path / "nf.skops"
        sio.dump(nf, path)
        assert sio.get_untrusted_types(file=path) == ["housing.features.NeighbourFeatures"]
        loaded = sio.load(path, trusted=["housing.features.NeighbourFeatures"])
        assert getattr(loaded, "tree_", None) is None
        assert getattr(loaded, "stats_", None) is None
        np.testing.assert_array_equal(loaded.transform(X_sample.head(20)), nf.transform(X_sample.head(20)))


def test_housing_features_join_both_sets(X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    features = HousingFeatures((3, 10), cv=4, random_state=0)
    train_out = features.fit_transform(X_sample, y_sample)
    names = features.get_feature_names_out()
    assert train_out.shape == (len(X_sample), len(names))
    engineered = FeatureEngineer().fit(X_sample).transform(X_sample)
    out_of_fold = NeighbourFeatures((3, 10), cv=4, random_state=0).fit_transform(X_sample, y_sample)
    np.testing.assert_array_equal(train_out, np.hstack([engineered, out_of_fold]))
    # At prediction time the neighbours come from the whole training set.
    served = features.transform(X_sample.head(10))
    np.testing.assert_array_equal(served[:, : engineered.shape[1]], engineered[:10])
    assert not np.array_equal(served, train_out[:10])
    assert features.fit(X_sample, y_sample).transform(X_sample.head(10)).shape == served.shape
