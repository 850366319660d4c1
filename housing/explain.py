"""Why a house got its price: each raw input's contribution, in USD, from exact TreeSHAP values.

A LightGBM forest gives exact TreeSHAP values of its raw score (``Booster.predict(...,
pred_contrib=True)``): one value per model input plus the base value, the forest's
average score, and base + values equals the score. The model's inputs are engineered
features, so each feature's value is folded back onto the raw inputs it is computed from
(``get_feature_sources_out`` of :mod:`housing.features`): a feature with one source gives
it its whole value, a feature with several splits it equally among them. Equal shares are
what Shapley values themselves give symmetric players, and nothing in a derived feature
(a ratio, a distance, a neighbourhood mean) says one of its sources matters more.

When the model learns a transformed target (log or square root: a ``TransformedTargetRegressor``)
the forest's values are in that transformed space. In USD the base is the inverse of the
base score, and the difference between the price and that base is split among the inputs
in proportion to their transformed values: each is scaled by
``(price_usd - base_usd) / sum(transformed values)``, the slope of the inverse between the
base and the house's score (its derivative where the values sum to zero). Contributions
keep their sign and their order, and base + contributions equals the price.

The values are LightGBM's own, computed in C++ without the GIL; one house of the champion
takes a few milliseconds (``make bench`` measures ``/explain``). The service (service.model)
supplies the booster, the features, the price it serves and the threads a batch may use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from housing.columns import FEATURE_COLUMNS

Inverse = Callable[[np.ndarray], np.ndarray]
# Transformed values summing to less than this count as zero: the slope of the inverse is its derivative there.
ZERO_SUM = 1e-9
# Relative step of the central difference that gives that derivative.
DERIVATIVE_STEP = 1e-6


@dataclass(frozen=True)
class Explanation:
    """Explanations of ``n`` houses, all in USD.

    Attributes
    ----------
    price_usd : ndarray of shape (n,)
        The prices explained.
    base_usd : ndarray of shape (n,)
        The model's base value: its average score over the training data (in USD).
    contributions_usd : ndarray of shape (n, len(inputs))
        Each raw input's share of ``price_usd - base_usd``; each row sums to it.
    inputs : tuple of str
        The raw inputs, in column order (:data:`housing.columns.FEATURE_COLUMNS`).
    """

    price_usd: np.ndarray
    base_usd: np.ndarray
    contributions_usd: np.ndarray
    inputs: tuple[str, ...] = FEATURE_COLUMNS


def concatenate(parts: Sequence[Explanation]) -> Explanation:
    """The explanations of ``parts`` (of the same inputs), one after the other."""
    if not parts:
        raise ValueError("parts: give at least one explanation")
    return Explanation(
        price_usd=np.concatenate([part.price_usd for part in parts]),
        base_usd=np.concatenate([part.base_usd for part in parts]),
        contributions_usd=np.concatenate([part.contributions_usd for part in parts]),
        inputs=parts[0].inputs,
    )


def folding_matrix(sources: Sequence[Sequence[str]], inputs: Sequence[str] = FEATURE_COLUMNS) -> np.ndarray:
    """The (n_features, n_inputs) matrix that folds feature values onto raw inputs.

    Row ``i`` gives feature ``i``'s value in equal shares to its sources
    (``sources[i]``, names of ``inputs``), so every row sums to 1 and folding keeps the total.
    Raises ``ValueError`` for a feature without sources or with a source that is not an input.
    """
    position = {name: j for j, name in enumerate(inputs)}
    matrix = np.zeros((len(sources), len(inputs)))
    for i, names in enumerate(sources):
        unknown = [name for name in names if name not in position]
        if not names or unknown:
            raise ValueError(f"feature {i}: sources {list(names)} must be raw inputs of {list(inputs)}")
        for name in names:
            matrix[i, position[name]] += 1.0 / len(names)
    return matrix


def in_usd(base: np.ndarray, contributions: np.ndarray, price_usd: np.ndarray, inverse: Inverse | None) -> Explanation:
    """Base and raw-input contributions in the score's units, taken to USD so that they sum to ``price_usd``.

    ``base`` has shape (n,), ``contributions`` (n, n_inputs) and ``price_usd`` (n,): the
    model's prices, the inverse of the scores. Without a target transform (``inverse`` None)
    the score is in USD already and the values are kept as they are. With one, the base is
    ``inverse(base)`` and the contributions are scaled by ``(price_usd - base_usd) / sum``
    (see the module's docstring).
    """
    if inverse is None:
        return Explanation(price_usd=price_usd, base_usd=base, contributions_usd=contributions)
    base_usd = np.asarray(inverse(base), dtype=np.float64)
    total = contributions.sum(axis=1)
    step = DERIVATIVE_STEP * np.maximum(np.abs(base), 1.0)
    derivative = (np.asarray(inverse(base + step)) - np.asarray(inverse(base - step))) / (2 * step)
    zero = np.abs(total) < ZERO_SUM
    slope = np.where(zero, derivative, (price_usd - base_usd) / np.where(zero, 1.0, total))
    return Explanation(price_usd=price_usd, base_usd=base_usd, contributions_usd=contributions * slope[:, None])


def explain_forest(
    booster: Any,
    features: np.ndarray,
    fold: np.ndarray,
    price_usd: np.ndarray,
    inverse: Inverse | None,
    num_threads: int = 1,
) -> Explanation:
    """Each raw input's contribution to ``price_usd``, the prices a LightGBM model gives these houses.

    ``booster`` is the model's LightGBM booster, ``features`` (n, n_features) the model's
    inputs for the houses, ``fold`` the (n_features, n_inputs) matrix that folds their values
    onto the raw inputs (:func:`folding_matrix` of the features' sources), ``inverse`` what
    takes the booster's score to USD (None when it is USD already:
    ``housing.model_format.target_inverse``), ``num_threads`` the LightGBM threads that share the houses.
    """
    values = np.asarray(booster.predict(features, pred_contrib=True, num_threads=num_threads), dtype=np.float64)
    return in_usd(values[:, -1], values[:, :-1] @ fold, np.asarray(price_usd, dtype=np.float64), inverse)


def top_contributions(contributions_usd: np.ndarray, inputs: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` largest contributions of one house (shape (n_inputs,)) by size, as ``{input, contribution_usd}``."""
    order = np.argsort(-np.abs(contributions_usd), kind="stable")[:k]
    return [{"input": inputs[j], "contribution_usd": float(contributions_usd[j])} for j in order]


def mean_abs_contribution(contributions_usd: np.ndarray, inputs: Sequence[str]) -> dict[str, float]:
    """Global importance: each input's mean absolute contribution (USD) over houses, shape (n, n_inputs) in."""
    means = np.abs(contributions_usd).mean(axis=0) if len(contributions_usd) else np.zeros(len(inputs))
    return {name: float(value) for name, value in zip(inputs, means, strict=True)}
