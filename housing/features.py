"""Feature engineering shared by training and serving.

Both transformers take *raw* records: anything indexable by column name (a
``pandas.DataFrame`` or a mapping of column name to 1-D array) holding the
columns of :data:`housing.columns.FEATURE_COLUMNS`. They are steps of the saved model, so the
registered model and the prediction service run exactly this code.

The arithmetic is plain NumPy on whole columns: one record or ten thousand go
through the same vectorised path, which keeps single-record latency low. The
transformers opt out of scikit-learn's ``set_output`` wrapping
(``auto_wrap_output_keys=None``): they always return arrays, and the wrapper read
the global configuration on every call, about 20 µs of a served house's features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.spatial import KDTree
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from housing.columns import CATEGORICAL_COLUMN, FEATURE_COLUMNS, NUMERIC_COLUMNS, OCEAN_PROXIMITY_CATEGORIES, column

# Centres of California's largest metropolitan areas (longitude, latitude): house
# prices fall with distance from jobs, which a tree finds hard to learn from raw
# coordinates alone.
CITY_CENTRES: dict[str, tuple[float, float]] = {
    "los_angeles": (-118.2437, 34.0522),
    "san_francisco": (-122.4194, 37.7749),
    "san_jose": (-121.8863, 37.3382),
    "san_diego": (-117.1611, 32.7157),
    "sacramento": (-121.4944, 38.5816),
}
EARTH_RADIUS_KM = 6371.0
# Neighbour searches of at least this many points use every core: 10,000 served houses take 24 ms instead
# of 43 on two. Fewer stay on one thread, where starting the others would cost more than it saves. The
# neighbours found do not depend on it.
PARALLEL_QUERY_POINTS = 1000
# Rotations (degrees) of the coordinate axes: the coast runs diagonally, so
# rotated axes let axis-aligned splits follow it.
ROTATIONS_DEG: tuple[float, ...] = (15.0, 30.0, 45.0, 60.0)
# The same as arrays, so each transform computes all distances and all rotations in one step each:
# one served house costs a few numpy calls instead of a hundred.
_CITY_LON, _CITY_LAT = (np.array(coords) for coords in zip(*CITY_CENTRES.values(), strict=True))
_COS, _SIN = np.cos(np.radians(ROTATIONS_DEG)), np.sin(np.radians(ROTATIONS_DEG))

Records = pd.DataFrame | Mapping[str, Any]


def haversine_km(lon: np.ndarray, lat: np.ndarray, lon0: Any, lat0: Any) -> np.ndarray:
    """Great-circle distance in km from each (lon, lat) in degrees to a point (lon0, lat0).

    The arguments broadcast: ``lon`` of shape (n, 1) against ``lon0`` of shape (m,) gives
    the (n, m) distances from n places to m points.
    """
    lon, lat, lon0_r, lat0_r = np.radians(lon), np.radians(lat), np.radians(lon0), np.radians(lat0)
    a = np.sin((lat - lat0_r) / 2) ** 2 + np.cos(lat) * np.cos(lat0_r) * np.sin((lon - lon0_r) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a)), dtype=np.float64)


def one_hot(values: Any, categories: Sequence[str]) -> np.ndarray:
    """Encode ``values`` as an (n_samples, n_categories) 0/1 float matrix.

    A value outside ``categories`` becomes an all-zero row: the schema rejects
    such values before they get here, so this only guards the model itself.
    """
    codes = np.asarray(values, dtype=object).reshape(-1, 1)
    return np.asarray(codes == np.asarray(categories, dtype=object).reshape(1, -1), dtype=np.float64)


class FeatureEngineer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):  # type: ignore[call-arg]
    """Impute, derive ratios and geography, and one-hot encode raw records.

    ``total_bedrooms`` is imputed as ``total_rooms`` times the median
    bedrooms-per-room ratio learned in :meth:`fit` (a missing count is far better
    predicted from the block's size than by a global median).

    Output: float array of shape (n_samples, len(get_feature_names_out())).
    """

    def fit(self, X: Records, y: Any = None) -> FeatureEngineer:
        rooms, bedrooms = column(X, "total_rooms"), column(X, "total_bedrooms")
        known = np.isfinite(bedrooms) & (rooms > 0)
        if not known.any():
            raise ValueError("cannot learn imputation: no row has total_bedrooms and total_rooms > 0")
        self.bedrooms_per_room_ = float(np.median(bedrooms[known] / rooms[known]))
        self.n_features_in_ = len(FEATURE_COLUMNS)
        return self

    def transform(self, X: Records) -> np.ndarray:
        check_is_fitted(self, "bedrooms_per_room_")
        lon, lat = column(X, "longitude"), column(X, "latitude")
        rooms, households = column(X, "total_rooms"), column(X, "households")
        population, income = column(X, "population"), column(X, "median_income")
        bedrooms = column(X, "total_bedrooms")
        bedrooms = np.where(np.isfinite(bedrooms), bedrooms, rooms * self.bedrooms_per_room_)
        # Counts can be zero in hand-made records; keep ratios finite.
        safe_households = np.maximum(households, 1.0)
        safe_rooms = np.maximum(rooms, 1.0)
        city_km = haversine_km(lon[:, None], lat[:, None], _CITY_LON, _CITY_LAT)  # (n, n_cities)
        # (n, 2 * n_rotations): x then y of each rotation.
        x, y = lon[:, None] * _COS - lat[:, None] * _SIN, lon[:, None] * _SIN + lat[:, None] * _COS
        rotated = np.stack([x, y], axis=2).reshape(len(lon), -1)
        numeric = [
            lon,
            lat,
            column(X, "housing_median_age"),
            rooms,
            bedrooms,
            population,
            households,
            income,
            np.log(np.maximum(income, 1e-3)),
            rooms / safe_households,
            bedrooms / safe_rooms,
            population / safe_households,
            np.log1p(population),
            np.log1p(households),
            city_km,
            city_km.min(axis=1),
            rotated,
        ]
        return np.column_stack([*numeric, one_hot(X[CATEGORICAL_COLUMN], OCEAN_PROXIMITY_CATEGORIES)])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([name for name, _ in self._outputs()], dtype=object)

    def get_feature_sources_out(self) -> list[tuple[str, ...]]:
        """The raw columns each output feature is computed from, parallel to :meth:`get_feature_names_out`.

        A missing ``total_bedrooms`` is imputed from ``total_rooms``, yet the
        feature stays credited to ``total_bedrooms``: the mapping is per feature,
        not per house, and it is that input's value (or absence) that is explained.
        """
        return [sources for _, sources in self._outputs()]

    @staticmethod
    def _outputs() -> list[tuple[str, tuple[str, ...]]]:
        """(name, raw source columns) of each output column, in :meth:`transform`'s order: one list for both."""
        location = ("longitude", "latitude")
        return [
            *((name, (name,)) for name in NUMERIC_COLUMNS),
            ("log_median_income", ("median_income",)),
            ("rooms_per_household", ("total_rooms", "households")),
            ("bedrooms_per_room", ("total_bedrooms", "total_rooms")),
            ("population_per_household", ("population", "households")),
            ("log_population", ("population",)),
            ("log_households", ("households",)),
            *((f"km_to_{city}", location) for city in CITY_CENTRES),
            ("km_to_nearest_city", location),
            *((f"rot{deg:g}_{axis}", location) for deg in ROTATIONS_DEG for axis in ("x", "y")),
            *((f"ocean_proximity_{c}", (CATEGORICAL_COLUMN,)) for c in OCEAN_PROXIMITY_CATEGORIES),
        ]


class NeighbourFeatures(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):  # type: ignore[call-arg]
    """Target and income statistics of the nearest training block groups.

    :meth:`fit` remembers every training block group's position, target and
    income; :meth:`transform` looks up the ``k`` nearest of them (great-circle
    distance) for each record. On the training data itself :meth:`fit_transform`
    computes the features *out of fold* (like scikit-learn's ``TargetEncoder``):
    a row never sees its own target, so the model cannot learn to trust a leak.

    Parameters
    ----------
    n_neighbors : sequence of int
        Neighbourhood sizes; each adds a mean-target and a mean-income feature.
    cv : int
        Folds used for the out-of-fold features in :meth:`fit_transform`.
    random_state : int
        Seed of the fold shuffle.

    Output: float array of shape (n_samples, 2 * len(n_neighbors) + 2); target
    means are in the units of the ``y`` given to :meth:`fit` (USD, or the
    transformed target when the model uses a target transform).
    """

    def __init__(self, n_neighbors: Sequence[int] = (8, 32), cv: int = 5, random_state: int = 42):
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.random_state = random_state

    # The KD-tree is rebuilt from the stored points instead of being pickled: it is cheap to build
    # and not a type the skops format can vouch for. stats_ is target_ above income_.
    _UNSAVED: ClassVar[tuple[str, ...]] = ("tree_", "stats_")

    def fit(self, X: Records, y: Any) -> NeighbourFeatures:
        self.points_ = self._unit_sphere(X)
        self.target_ = np.asarray(y, dtype=np.float64).reshape(-1)
        self.income_ = column(X, "median_income")
        if len(self.target_) <= max(self.n_neighbors):
            raise ValueError(
                f"NeighbourFeatures needs more than {max(self.n_neighbors)} training rows, got {len(self.target_)}"
            )
        self.tree_ = KDTree(self.points_)
        self.stats_: np.ndarray | None = None  # this fit's, built by _stats on first use
        self.n_features_in_ = len(FEATURE_COLUMNS)
        return self

    def transform(self, X: Records) -> np.ndarray:
        check_is_fitted(self, "points_")
        return self._lookup(self._tree(), self._stats(), self._unit_sphere(X), column(X, "median_income"))

    def fit_transform(self, X: Records, y: Any = None, **fit_params: Any) -> np.ndarray:
        self.fit(X, y)
        out = np.empty((len(self.target_), len(self.get_feature_names_out())))
        stats = self._stats()
        folds = KFold(self.cv, shuffle=True, random_state=self.random_state)
        for train_idx, held_idx in folds.split(self.points_):
            tree = KDTree(self.points_[train_idx])
            out[held_idx] = self._lookup(tree, stats[:, train_idx], self.points_[held_idx], self.income_[held_idx])
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [f"neighbours{k}_{stat}" for k in self.n_neighbors for stat in ("target", "income")]
        return np.asarray([*names, "km_to_nearest_neighbour", "income_vs_neighbours"], dtype=object)

    def get_feature_sources_out(self) -> list[tuple[str, ...]]:
        """The raw columns each output feature is computed from, parallel to :meth:`get_feature_names_out`.

        Which block groups are the neighbours depends on the location alone, so
        their mean target and mean income come from ``longitude`` and ``latitude``;
        ``income_vs_neighbours`` divides the house's own ``median_income`` by theirs.
        """
        location = ("longitude", "latitude")
        return [*[location] * (2 * len(self.n_neighbors)), location, ("median_income", *location)]

    def _lookup(self, tree: KDTree, stats: np.ndarray, points: np.ndarray, own_income: np.ndarray) -> np.ndarray:
        """The features of ``points`` (n, 3) among the training rows of ``tree``.

        ``stats`` holds those rows' target and income, shape (2, n_train).
        """
        # SciPy's tree rather than scikit-learn's: the same exact search without re-validating the
        # array on every query, which was a tenth of a served prediction's time.
        sizes = np.asarray(self.n_neighbors)
        workers = -1 if len(points) >= PARALLEL_QUERY_POINTS else 1
        dist, idx = tree.query(points, k=int(sizes.max()), workers=workers)
        dist, idx = dist.reshape(len(points), -1), idx.reshape(len(points), -1)
        # Every neighbourhood's mean target and income from one running sum over the nearest rows, in
        # a few array calls whatever the number of sizes: one served house pays per call, not per value.
        # Each statistic is gathered from its own contiguous row: 3x faster on a batch than (n, 2) rows.
        sums = [np.cumsum(values[idx], axis=1)[:, sizes - 1] for values in stats]
        means = np.stack(sums, axis=-1) / sizes[:, None]  # (n, len(sizes), 2)
        # Chord length on the unit sphere -> great-circle distance.
        nearest_km = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(dist[:, 0] / 2, 1.0))
        income_ratio = own_income / np.maximum(means[:, -1, 1], 1e-3)
        return np.column_stack([means.reshape(len(points), -1), nearest_km, income_ratio])

    def _stats(self) -> np.ndarray:
        """The training rows' target and income, one above the other: shape (2, n_train)."""
        stats = getattr(self, "stats_", None)
        if stats is None:
            stats = self.stats_ = np.vstack([self.target_, self.income_])
        return stats

    def _tree(self) -> KDTree:
        if getattr(self, "tree_", None) is None:
            self.tree_ = KDTree(self.points_)
        return self.tree_

    @staticmethod
    def _unit_sphere(X: Records) -> np.ndarray:
        """Positions as (n_samples, 3) points on the unit sphere.

        Straight-line (chord) distance between such points grows monotonically
        with great-circle distance, so a Euclidean KD-tree finds the same
        neighbours as a haversine ball tree, several times faster.
        """
        lat, lon = np.radians(column(X, "latitude")), np.radians(column(X, "longitude"))
        return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {key: value for key, value in state.items() if key not in self._UNSAVED}


class HousingFeatures(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):  # type: ignore[call-arg]
    """Every model input: :class:`FeatureEngineer` and :class:`NeighbourFeatures` side by side.

    Does what scikit-learn's ``FeatureUnion`` would, without its per-call joblib
    machinery, which cost more than the features themselves on a single record.
    ``fit_transform`` keeps the neighbour features out of fold.

    Output: float array of shape (n_samples, len(get_feature_names_out())).
    """

    def __init__(self, n_neighbors: Sequence[int] = (3, 10, 30), cv: int = 5, random_state: int = 42):
        self.n_neighbors = n_neighbors
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: Records, y: Any) -> HousingFeatures:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Records, y: Any = None, **fit_params: Any) -> np.ndarray:
        self.engineer_ = FeatureEngineer()
        self.neighbours_ = NeighbourFeatures(self.n_neighbors, cv=self.cv, random_state=self.random_state)
        self.n_features_in_ = len(FEATURE_COLUMNS)
        return np.hstack([self.engineer_.fit_transform(X), self.neighbours_.fit_transform(X, y)])

    def transform(self, X: Records) -> np.ndarray:
        check_is_fitted(self, "neighbours_")
        return np.hstack([self.engineer_.transform(X), self.neighbours_.transform(X)])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "neighbours_")
        return np.concatenate([self.engineer_.get_feature_names_out(), self.neighbours_.get_feature_names_out()])

    def get_feature_sources_out(self) -> list[tuple[str, ...]]:
        """The raw columns each output feature is computed from, parallel to :meth:`get_feature_names_out`."""
        check_is_fitted(self, "neighbours_")
        return [*self.engineer_.get_feature_sources_out(), *self.neighbours_.get_feature_sources_out()]
