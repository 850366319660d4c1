"""Prices with intervals: normalised conformal prediction, calibrated on out-of-fold residuals.

A price model is wrapped with a second, small model of how large its error is
at each house (the *scale*, in USD). The interval is ``price ± q · scale``,
where ``q`` is a quantile of the calibration scores ``|y - ŷ| / scale`` of
houses the price model did not train on. Intervals are therefore wide where
prices are hard to predict and narrow where they are not, and cover the nominal
share of new houses as long as those resemble the calibration houses (the
exchangeability assumption of conformal prediction).

The quantile is taken per median-income band (housing.slices, the bands the
reports judge coverage by): Mondrian conformal prediction (Vovk, Gammerman &
Shafer 2005; Boström & Johansson 2020), which promises the nominal share within
each band rather than only over all houses. One quantile over every house
over-covered the top band (6+, 92.9% at 90% nominal in training.refit_effect's
repeated K-fold): its scores run lower than the other bands' (90th percentile
1.93 against 2.00-2.11), most of all for the 28% of its houses at the
500,001 USD price cap, covered 94.4% (the band's other houses 92.3%). A band
with too few calibration houses for a quantile of its own uses the pooled one.

The calibration houses are the houses the price model learned from, priced out
of fold (``ŷ`` of each house from a model of the same configuration that did
not see it): the training split, by the cross-validation that chose the model,
for the training-split fit; every labelled row, by folds of the same kind
(training.refit), for the served refit. The scale model is cross-fitted the
same way, so no calibration score comes from a model that saw its house. This
is the "cross-conformal" shortcut of Vovk (2015) and Lei et al. (2018, §5.2):
MAPIE's normalised score needs a held-out calibration split, which would cost
the price model a fifth of its training rows, and its CV+ intervals need every
fold's model at serving time. The evaluate stage reports the training-split
fit's coverage on the untouched test split; training.refit_effect measures the
refit's by repeated K-fold of the whole fit-and-calibrate procedure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from lightgbm import LGBMRegressor
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS, OCEAN_PROXIMITY_CATEGORIES, column
from housing.features import Records, one_hot
from housing.slices import band_index

# The lowest scale, as a share of the typical absolute residual: a scale model that predicts almost no error
# for some house must not give it a zero-width interval.
SCALE_FLOOR_QUANTILE = 0.05


class Spread(NamedTuple):
    """What houses' bounds at any coverage are made of besides their prices (ConformalRegressor.spread)."""

    # The scale model's raw output, USD, shape (n_houses,).
    scale: np.ndarray
    # Each house's calibration group (its income band's index, or 0 for all), shape (n_houses,).
    group: np.ndarray


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest of ``n`` sorted ``scores``; infinite when ``n`` is too few to promise ``level``."""
    rank = math.ceil((len(scores) + 1) * level)
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


class ConformalRegressor(RegressorMixin, BaseEstimator):
    """A fitted price model and the normalised conformal intervals of its prices.

    :meth:`predict` is the price model's own prediction, so the wrapper changes
    no price; :meth:`predict_interval` adds the bounds.

    Parameters
    ----------
    estimator : fitted regressor
        Raw records (see housing.features) in, prices in USD out, shape (n_samples,).
    coverage : float, default 0.9
        Nominal share of new houses whose price falls inside the interval, when none is asked for.
    scale_params : dict, optional
        Parameters of the scale model (a LightGBM regressor of the absolute residual; LightGBM's defaults if None).
    cv : int, default 5
        Folds for cross-fitting the scale model on the calibration houses.
    random_state : int, default 42
        Seed of those folds and of the scale model.
    income_bands : sequence of float, optional
        Edges of the median-income bands (housing.slices) calibrated each on its own; None calibrates every
        house together.
    min_band_size : int, default 200
        The fewest calibration houses a band needs for a quantile of its own; a smaller band uses the pooled one.

    Attributes
    ----------
    scale_ : LGBMRegressor
        Predicts a house's absolute error in USD from its raw inputs and its price, fitted on every calibration
        house. Raw inputs, not the price model's engineered features: as narrow intervals at the same coverage
        (reports/model_search.md), for a fraction of a millisecond less per request.
    scale_floor_ : float
        The lowest scale used, in USD.
    scores_ : ndarray of shape (n_calibration,)
        Sorted calibration scores ``|y - ŷ| / scale`` (unitless), of every calibration house.
    band_scores_ : list of (ndarray or None)
        Per income band, the sorted scores of its calibration houses, or None where they are fewer than
        ``min_band_size``; empty when every house is calibrated together.
    """

    def __init__(
        self,
        estimator: BaseEstimator,
        coverage: float = 0.9,
        scale_params: Mapping[str, Any] | None = None,
        cv: int = 5,
        random_state: int = 42,
        income_bands: Sequence[float] | None = None,
        min_band_size: int = 200,
    ) -> None:
        self.estimator = estimator
        self.coverage = coverage
        self.scale_params = scale_params
        self.cv = cv
        self.random_state = random_state
        self.income_bands = income_bands
        self.min_band_size = min_band_size

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A model file written before the calibration per income band: it calibrated every house together.
        super().__setstate__({"income_bands": None, "min_band_size": 0, "band_scores_": [], **state})

    def fit(self, X: Records, y: Any, oof_pred: Any) -> ConformalRegressor:
        """Calibrate on houses ``X`` (n_samples rows), their prices ``y`` and out-of-fold prices ``oof_pred`` (USD).

        ``oof_pred`` must come from models that did not train on the house they
        price (cross-validation's held-out predictions); ``estimator`` is not refitted.
        """
        y_true, oof = np.asarray(y, dtype=float).reshape(-1), np.asarray(oof_pred, dtype=float).reshape(-1)
        if y_true.shape != oof.shape or not np.isfinite(oof).all():
            raise ValueError(f"oof_pred: need {len(y_true)} finite out-of-fold prices, got shape {oof.shape}")
        if not 0 < self.coverage < 1:
            raise ValueError(f"coverage: must be between 0 and 1, got {self.coverage}")
        if self.min_band_size < 1:
            raise ValueError(f"min_band_size: must be at least 1, got {self.min_band_size}")
        inputs, error = self.scale_inputs(X, oof), np.abs(y_true - oof)
        self.scale_floor_ = float(np.quantile(error, SCALE_FLOOR_QUANTILE))
        held_scale = np.empty_like(error)
        for train_idx, held_idx in KFold(self.cv, shuffle=True, random_state=self.random_state).split(inputs):
            model = self._scale_model().fit(inputs[train_idx], error[train_idx])
            held_scale[held_idx] = model.predict(inputs[held_idx])
        scores = error / np.maximum(held_scale, self.scale_floor_)
        self.scores_ = np.sort(scores)
        group = self.group(X)
        self.band_scores_ = [
            np.sort(scores[group == band]) if np.count_nonzero(group == band) >= self.min_band_size else None
            for band in range(0 if self.income_bands is None else len(self.income_bands))
        ]
        self.scale_ = self._scale_model().fit(inputs, error)
        self.n_features_in_ = getattr(self.estimator, "n_features_in_", None)
        return self

    def predict(self, X: Records) -> np.ndarray:
        """Prices in USD, shape (n_samples,): the price model's own."""
        return np.asarray(self.estimator.predict(X), dtype=float)

    def predict_interval(self, X: Records, coverage: float | None = None) -> np.ndarray:
        """Lower and upper bounds in USD, shape (n_samples, 2), at ``coverage`` (default: :attr:`coverage`)."""
        return self.interval(X, self.predict(X), coverage)

    def interval(
        self, X: Records, price: np.ndarray, coverage: float | None = None, num_threads: int = 0
    ) -> np.ndarray:
        """Bounds, shape (n_samples, 2), around ``price`` (the price model's prices of ``X``, USD).

        For callers that computed the prices another way (a compiled forest): the
        bounds need the price but not the price model. ``num_threads`` is the scale
        model's (0: LightGBM's default, every core).
        """
        scale = np.asarray(self.scale_.booster_.predict(self.scale_inputs(X, price), num_threads=num_threads))
        return self.bounds(price, self.spread(X, scale), coverage)

    def spread(self, X: Records, scale: np.ndarray) -> Spread:
        """The spread of houses ``X`` from the scale model's raw output for them (USD, shape (n_samples,))."""
        return Spread(np.asarray(scale, dtype=float), self.group(X))

    def group(self, X: Records) -> np.ndarray:
        """Each house's calibration group, shape (n_samples,): its income band's index, or 0 for all houses."""
        income = column(X, "median_income")
        if self.income_bands is None:
            return np.zeros(len(income), dtype=np.intp)
        return band_index(income, self.income_bands)

    def bounds(self, price: np.ndarray, spread: Spread, coverage: float | None = None) -> np.ndarray:
        """Bounds, shape (n_samples, 2), from prices (USD, shape (n_samples,)) and their :meth:`spread`.

        The scale is floored at :attr:`scale_floor_`; lower bounds stop at 0 USD.
        """
        half_width = self.quantiles(coverage)[spread.group] * np.maximum(spread.scale, self.scale_floor_)
        return np.column_stack([np.maximum(price - half_width, 0.0), price + half_width])

    def quantiles(self, coverage: float | None = None) -> np.ndarray:
        """The conformal quantile of each calibration group for ``coverage``, shape (n_groups,).

        A band's own (:func:`conformal_quantile` of its scores), or the pooled :meth:`quantile` for a band
        of fewer than ``min_band_size`` houses; the pooled one alone when every house is calibrated together.
        """
        pooled = self.quantile(coverage)
        level = self._level(coverage)
        own = [pooled if scores is None else conformal_quantile(scores, level) for scores in self.band_scores_]
        return np.array(own or [pooled])

    def quantile(self, coverage: float | None = None) -> float:
        """The conformal quantile of every calibration house's scores for ``coverage`` (:func:`conformal_quantile`).

        Infinite when there are too few calibration houses to promise ``coverage``.
        """
        check_is_fitted(self, "scores_")
        return conformal_quantile(self.scores_, self._level(coverage))

    def _level(self, coverage: float | None) -> float:
        level = self.coverage if coverage is None else coverage
        if not 0 < level < 1:
            raise ValueError(f"coverage: must be between 0 and 1, got {level}")
        return level

    @staticmethod
    def scale_inputs(X: Records, price: np.ndarray) -> np.ndarray:
        """The scale model's inputs, shape (n_samples, 15): numeric inputs, ocean one-hot, price (USD)."""
        numeric = [column(X, name) for name in NUMERIC_COLUMNS]
        ocean = one_hot(X[CATEGORICAL_COLUMN], OCEAN_PROXIMITY_CATEGORIES)
        return np.column_stack([*numeric, ocean, np.asarray(price, dtype=float).reshape(-1)])

    def _scale_model(self) -> LGBMRegressor:
        return LGBMRegressor(**(self.scale_params or {}), random_state=self.random_state, verbose=-1)
