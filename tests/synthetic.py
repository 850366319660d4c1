"""Synthetic California-like block groups: the fast tests' data, made in memory from a seed.

Columns, ranges and categories are the real data's (housing.columns); prices fall
with distance from the nearest city and rise with income, as in the census, so
models have something to learn. About 1% of ``total_bedrooms`` is missing, as in
the real file. Nothing here is meant to match the real figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from housing.columns import NUMERIC_BOUNDS, TARGET_BOUNDS, TARGET_COLUMN
from housing.features import CITY_CENTRES, haversine_km

# Price shift (USD) by location: inland is cheaper, the coast dearer.
_LOCATION_USD = {"<1H OCEAN": 20_000, "INLAND": -60_000, "ISLAND": 120_000, "NEAR BAY": 40_000, "NEAR OCEAN": 30_000}


def synthetic_housing(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` synthetic block groups with the raw CSV's columns, shape (rows, 10); prices in USD."""
    rng = np.random.default_rng(seed)
    centres = np.array(list(CITY_CENTRES.values()))
    near = rng.integers(0, len(centres), rows)
    lon = _within(centres[near, 0] + rng.normal(0, 0.7, rows), "longitude")
    lat = _within(centres[near, 1] + rng.normal(0, 0.6, rows), "latitude")
    households = np.round(rng.lognormal(6.0, 0.5, rows)).clip(1, 6000)
    rooms = np.round(households * rng.normal(5.2, 1.0, rows).clip(1.5))
    bedrooms = np.round(rooms * rng.normal(0.21, 0.03, rows).clip(0.1, 0.5))
    bedrooms[rng.random(rows) < 0.01] = np.nan
    income = _within(rng.lognormal(1.25, 0.45, rows), "median_income")
    ocean = np.where(lon < -120.5, rng.choice(["NEAR BAY", "NEAR OCEAN", "<1H OCEAN"], rows), "INLAND")
    km = np.min([haversine_km(lon, lat, *centre) for centre in centres], axis=0)
    # Not linear: the city premium decays with distance and the coast pays more the richer the block group.
    location = np.vectorize(_LOCATION_USD.get)(ocean) * income / 4
    price = 40_000 + 200_000 * np.exp(-km / 100) + 25_000 * income + location + rng.normal(0, 25_000, rows)
    return pd.DataFrame(
        {
            "longitude": lon.round(2),
            "latitude": lat.round(2),
            "housing_median_age": rng.integers(1, 53, rows).astype(float),
            "total_rooms": rooms,
            "total_bedrooms": bedrooms,
            "population": np.round(households * rng.normal(2.9, 0.6, rows).clip(1)),
            "households": households,
            "median_income": income.round(4),
            TARGET_COLUMN: price.clip(TARGET_BOUNDS.low, TARGET_BOUNDS.high).round(),
            "ocean_proximity": ocean,
        }
    )


def _within(values: np.ndarray, column: str) -> np.ndarray:
    bounds = NUMERIC_BOUNDS[column]
    return np.clip(values, bounds.low, bounds.high)
