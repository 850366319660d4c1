"""Data drift: compare recent inputs with the training data, feature by feature.

:func:`reference_profile` summarises the training inputs once (saved with the
model); :func:`drift_report` scores a window of recent inputs against it:

* numeric features: PSI over the reference deciles, and a two-sample
  Kolmogorov-Smirnov test against a seeded reference sample;
* ``ocean_proximity``: PSI over the categories, and a chi-square test of the
  observed counts against the reference shares.

A feature drifts when its PSI passes ``psi_threshold`` or its test's p-value
falls below ``p_value``. Needs only NumPy and SciPy, so the service can run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS, OCEAN_PROXIMITY_CATEGORIES

if TYPE_CHECKING:  # housing.features brings scikit-learn; only its type is needed here (see housing.model_format)
    from housing.features import Records

# Keeps PSI finite when a bin is empty on one side.
_EPSILON = 1e-4


def reference_profile(columns: Records, bins: int = 10, sample_size: int = 2000, seed: int = 42) -> dict[str, Any]:
    """Decile edges and shares, a seeded value sample per numeric feature, and category shares."""
    rng = np.random.default_rng(seed)
    numeric = {}
    for name in NUMERIC_COLUMNS:
        values = _finite(columns[name])
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        numeric[name] = {
            "edges": edges.tolist(),
            "shares": _shares(np.searchsorted(edges, values, side="right"), len(edges) + 1).tolist(),
            "sample": rng.choice(values, size=min(sample_size, len(values)), replace=False).tolist(),
        }
    categories = np.asarray(columns[CATEGORICAL_COLUMN], dtype=object)
    shares = [float(np.mean(categories == c)) for c in OCEAN_PROXIMITY_CATEGORIES]
    return {
        "rows": len(categories),
        "numeric": numeric,
        "categorical": {CATEGORICAL_COLUMN: dict(zip(OCEAN_PROXIMITY_CATEGORIES, shares, strict=True))},
    }


def drift_report(profile: Mapping[str, Any], columns: Records, psi_threshold: float, p_value: float) -> dict[str, Any]:
    """Per-feature PSI, test p-value and verdict for the window ``columns`` (name -> values)."""
    from scipy import stats

    features: dict[str, dict[str, Any]] = {}
    for name, ref in profile["numeric"].items():
        values = _finite(columns[name])
        edges = np.asarray(ref["edges"])
        current = _shares(np.searchsorted(edges, values, side="right"), len(edges) + 1)
        ks = stats.ks_2samp(values, np.asarray(ref["sample"]))
        features[name] = _verdict(
            "psi+ks", psi(np.asarray(ref["shares"]), current), float(ks.pvalue), psi_threshold, p_value
        )
    for name, ref_shares in profile["categorical"].items():
        observed = np.asarray(columns[name], dtype=object)
        counts = np.array([np.sum(observed == c) for c in ref_shares], dtype=float)
        expected = np.asarray(list(ref_shares.values()))
        current = counts / max(counts.sum(), 1)
        # The chi-square test needs positive expected counts; unseen categories get a floor.
        expected_counts = np.maximum(expected, _EPSILON) / np.maximum(expected, _EPSILON).sum() * counts.sum()
        chi = stats.chisquare(counts, expected_counts)
        features[name] = _verdict("psi+chi2", psi(expected, current), float(chi.pvalue), psi_threshold, p_value)
    drifted = sorted(name for name, result in features.items() if result["drifted"])
    return {
        "rows": len(columns[CATEGORICAL_COLUMN]),
        "thresholds": {"psi": psi_threshold, "p_value": p_value},
        "drift_detected": bool(drifted),
        "drifted_features": drifted,
        "features": features,
    }


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    ref = np.maximum(reference, _EPSILON)
    cur = np.maximum(current, _EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _verdict(test: str, psi_value: float, p: float, psi_threshold: float, p_value: float) -> dict[str, Any]:
    return {
        "test": test,
        "psi": round(psi_value, 6),
        "p_value": p,
        "drifted": psi_value > psi_threshold or p < p_value,
    }


def _shares(bin_index: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(bin_index, minlength=n_bins).astype(float)
    return np.asarray(counts / max(counts.sum(), 1), dtype=np.float64)


def _finite(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]
