"""The comparison of a challenger priced in shadow with the champion, on the same live houses.

Pure arithmetic over the log's shadowed houses (housing.log.queries ``LogReader.shadow_houses``): how far the
challenger's prices are from the champion's (challenger minus champion, in USD and in % of the champion's price:
mean, median, and the 95th percentile of the absolute difference) overall and per slice (housing.slices), the
challenger's pricing time, and, on the houses that received feedback, both models' RMSE and MAE with a paired
test of the difference: a one-sided Wilcoxon signed-rank test on each house's squared-error difference (challenger
minus champion; "less" means the challenger errs less), the paired t-test beside it. GET /shadow shows it, and
``housing shadow promote`` (housing.shadow) promotes on it only when :func:`verdict` says the challenger beat the
champion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from housing.slices import slice_masks


def differences(champion: np.ndarray, challenger: np.ndarray) -> dict[str, Any]:
    """How the challenger's prices differ from the champion's: signed mean and median, the 95th percentile of the
    absolute difference, in USD and in % of the champion's price (None for no house)."""
    figures: dict[str, Any] = {"houses": len(champion)}
    if not len(champion):
        return figures | dict.fromkeys(["mean_usd", "median_usd", "p95_abs_usd", "mean_pct", "median_pct",
                                        "p95_abs_pct"])  # fmt: skip
    usd = challenger - champion
    pct = usd / champion * 100
    for unit, values in (("usd", usd), ("pct", pct)):
        figures[f"mean_{unit}"] = float(values.mean())
        figures[f"median_{unit}"] = float(np.median(values))
        figures[f"p95_abs_{unit}"] = float(np.percentile(np.abs(values), 95))
    return figures


def paired_accuracy(actual: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> dict[str, Any]:
    """Both models' RMSE and MAE (USD) on the same labelled houses, and the paired tests of their squared errors.

    ``wilcoxon_p`` and ``t_test_p`` are one-sided: small when the challenger's squared errors are lower. Either is 1.0
    where it is undefined (no house, or every difference zero: the same prices).
    """
    n = len(actual)
    answer: dict[str, Any] = {"houses": n, "champion": None, "challenger": None, "mean_squared_error_difference": None,
                              "wilcoxon_p": None, "t_test_p": None}  # fmt: skip
    if not n:
        return answer
    errors = {"champion": champion - actual, "challenger": challenger - actual}
    for name, error in errors.items():
        answer[name] = {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
    d = errors["challenger"] ** 2 - errors["champion"] ** 2
    answer["mean_squared_error_difference"] = float(d.mean())
    answer["wilcoxon_p"], answer["t_test_p"] = _paired_tests(d)
    return answer


def _paired_tests(d: np.ndarray) -> tuple[float, float]:
    """One-sided p-values that ``d`` (challenger's minus champion's squared errors) sits below zero."""
    from scipy import stats  # about 0.3 s: loaded by the first comparison, never on the request path

    if not np.any(d):
        return 1.0, 1.0
    wilcoxon = float(stats.wilcoxon(d, alternative="less").pvalue)
    t_test = float(stats.ttest_1samp(d, 0.0, alternative="less").pvalue) if len(d) > 1 else 1.0
    return wilcoxon, 1.0 if math.isnan(t_test) else t_test


def verdict(accuracy: Mapping[str, Any], min_labelled: int, p_value: float) -> tuple[bool, str]:
    """Whether the challenger beat the champion on the labelled shadowed houses, and why (or why not).

    It did when at least ``min_labelled`` houses have feedback, its RMSE on them is the lower, and the one-sided
    Wilcoxon test of the squared-error differences gives p below ``p_value``.
    """
    n = accuracy["houses"]
    if n < min_labelled:
        return False, f"only {n:,} shadowed houses have feedback; at least {min_labelled:,} are needed (min_labelled)"
    champion, challenger, p = accuracy["champion"]["rmse"], accuracy["challenger"]["rmse"], accuracy["wilcoxon_p"]
    compared = f"RMSE {challenger:,.0f} against the champion's {champion:,.0f} USD on the same {n:,} houses"
    if challenger >= champion:
        return False, f"the challenger is not more accurate: {compared}"
    if p >= p_value:
        return False, f"the difference is not significant: {compared}, Wilcoxon p = {p:.3g} (needs < {p_value:g})"
    return True, f"the challenger beat the champion: {compared}, Wilcoxon p = {p:.3g} (< {p_value:g})"


def compare(
    houses: Mapping[str, Sequence[Any]], champion_version: str, income_bands: Sequence[float] | None
) -> dict[str, Any]:
    """The challenger against ``champion_version`` on the shadowed ``houses`` (columns of
    ``LogReader.shadow_houses``; those priced against another champion are left out): price differences overall
    and per ``ocean_proximity`` value and income band (``income_bands``' edges; None: no bands), its pricing time,
    and the paired accuracy on the labelled houses."""
    frame = pd.DataFrame(dict(houses))
    frame = frame[frame["champion_version"] == champion_version]
    champion = frame["champion_price_usd"].to_numpy(dtype=float)
    challenger = frame["price_usd"].to_numpy(dtype=float)
    slices: dict[str, dict[str, Any]] = {}
    if len(frame):
        frame["median_income"] = frame["median_income"].astype(float)
        masks = slice_masks(frame, income_bands or [0.0])
        if income_bands is None:
            masks.pop("income_band")
        slices = {column: {value: differences(champion[mask], challenger[mask]) for value, mask in values.items()}
                  for column, values in masks.items()}  # fmt: skip
    labelled = frame["actual_price_usd"].notna().to_numpy()
    actual = frame["actual_price_usd"].to_numpy(dtype=float)
    latency = frame["latency_ms"].to_numpy(dtype=float)
    per_house = latency / np.maximum(frame["batch_houses"].to_numpy(dtype=float), 1)
    return {
        "champion_version": champion_version,
        "houses_compared": len(frame),
        "price_difference": differences(champion, challenger),
        "slices": slices,
        "challenger_latency": {
            "call_p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
            "call_p95_ms": float(np.percentile(latency, 95)) if len(latency) else None,
            "per_house_ms": float(per_house.mean()) if len(per_house) else None,
        },
        "labelled": paired_accuracy(actual[labelled], champion[labelled], challenger[labelled]),
    }


def decision_figures(comparison: Mapping[str, Any], shadowed: int) -> tuple[dict[str, float], dict[str, float]]:
    """The comparison's figures as a decision records them: the champion's (before) and the challenger's (after)."""
    labelled, difference = comparison["labelled"], comparison["price_difference"]
    before = {f"shadow_{k}": v for k, v in (labelled["champion"] or {}).items()}
    after = {f"shadow_{k}": v for k, v in (labelled["challenger"] or {}).items()}
    after |= {"shadow_houses": float(shadowed), "shadow_labelled": float(labelled["houses"])}
    extra = {"shadow_wilcoxon_p": labelled["wilcoxon_p"], "shadow_mean_difference_usd": difference.get("mean_usd"),
             "shadow_mean_difference_pct": difference.get("mean_pct")}  # fmt: skip
    return before, after | {name: float(value) for name, value in extra.items() if value is not None}
