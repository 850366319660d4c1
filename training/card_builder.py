"""Builds the model card of the model the register stage logs: its figures from the reports, its words from here.

Every number comes from the pipeline's own outputs (reports/metrics.json, the
data validation report, the split files, reports/refit.json); the prose around
them says what the paper's sections ask for. housing.model_card defines and
renders the card.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from housing.columns import TARGET_BOUNDS
from housing.model_card import ModelCard
from housing.params import Params
from housing.slices import band_names
from training.prepare import load_split
from training.refit import ALL_LABELLED_ROWS, labelled_rows

# The census capped block-group values at this price (USD); the cap is the target's upper bound.
PRICE_CAP_USD = TARGET_BOUNDS.high


def build_card(params: Params, metrics: dict[str, Any], data_version: str) -> ModelCard:
    """The card of the served model (``params.refit.model_path``), whose training-split fit is scored in
    ``metrics`` (reports/metrics.json)."""
    winner = metrics["winner"]
    family = metrics["families"][winner]
    served = json.loads(params.refit.summary_path.read_text())
    refit = served["served_fit"] == ALL_LABELLED_ROWS
    _, y_served = labelled_rows(params) if refit else load_split(params.prepare.train_path)
    capped = float((y_served >= PRICE_CAP_USD).mean())
    intervals = metrics.get("intervals")
    labelled = metrics["train_rows"] + metrics["test_rows"]
    return ModelCard(
        model_details={
            "family": winner,
            "parameters": family["best_params"],
            "run_id": family["run_id"],
            "type": "gradient-boosted trees (LightGBM)" if "lightgbm" in str(family["best_params"]) else winner,
            "frameworks": f"scikit-learn {version('scikit-learn')}, LightGBM {version('lightgbm')}",
            "inputs": "9 raw census features of a California block group (see GET /model for the schema)",
            "output": "median house value of the block group in USD"
            + (f", with a {intervals['nominal']:.0%} conformal interval" if intervals else ""),
            "fit": f"refitted on all {served['rows']:,} labelled block groups (training split, test split and "
            "feedback) once chosen by cross-validation on the training split and checked against the champion on "
            "the test split; the test figures are of its training-split fit, logged on the same run as the "
            "model `evidence`, which promotion decisions compare"
            if refit
            else f"fitted on the training split ({served['rows']:,} block groups); the test figures are its own",
        },
        intended_use={
            "primary_uses": [
                "Estimating the median house value of a California block group from 1990 census-style features.",
                "Teaching and demonstrating an MLOps system: training, registry, serving and monitoring.",
            ],
            "primary_users": ["Data scientists and ML platform engineers running this project."],
            "out_of_scope": [
                "Pricing an individual house or making lending, insurance or tenancy decisions about people.",
                "Markets outside California or today's prices: the data describe 1990.",
                f"Block groups worth more than {PRICE_CAP_USD:,.0f} USD: the model cannot see above the census cap.",
            ],
        },
        factors={
            "relevant_factors": [
                "Location: ocean proximity, coordinates and distance to the large cities.",
                "Median income of the block group, in bands "
                + ", ".join(band_names(params.prepare.income_bands))
                + " (tens of thousands of USD).",
            ],
            "evaluation_factors": ["ocean_proximity values and median-income bands (see Quantitative analyses)."],
        },
        metrics={
            "test": metrics["test"],
            "cv": _cv_means(family["cv"]),
            "intervals": intervals,
            "refit_effect": _refit_figures(metrics["refit"]),
        },
        evaluation_data={
            "split": f"held-out test split, {metrics['test_rows']:,} block groups, "
            f"{params.prepare.test_size:.0%} of the data stratified by income band (seed {params.prepare.seed})",
            "use": "the training-split fit, scored once after the model was chosen on cross-validation"
            + ("; the served refit then learned these houses too, so they cannot score it" if refit else ""),
            "refit_effect": _refit_sentence(metrics["refit"]),
        },
        training_data={
            "source": "California housing data (1990 U.S. census, Pace and Barry 1997)",
            "rows": (
                f"{served['rows']:,} block groups, every labelled one (the decision's fit: the training split's "
                f"{metrics['train_rows']:,})"
                if refit
                else f"{served['rows']:,} of {labelled:,} block groups (the training split)"
            )
            + "; labeled feedback from the service included, split by id",
            "data_version": f"{data_version} (MD5 of the raw CSV, as in dvc.lock)",
            "prices_at_the_cap": f"{capped:.1%} of training prices sit at the census cap of {PRICE_CAP_USD:,.0f} USD",
        },
        slices=metrics.get("slices", {}),
        ethical_considerations=[
            "Location and income stand in for neighbourhood composition: prices learned from 1990 data carry the "
            "segregation and lending patterns of that time; do not use them to judge people or places.",
            "The data are aggregates of block groups; no individual is identified.",
        ],
        caveats_and_recommendations=[
            f"Prices are censored at {PRICE_CAP_USD:,.0f} USD ({capped:.1%} of training prices): the model "
            "underestimates the most expensive block groups.",
            "The data are from 1990: retrain on current data before any use beyond this project.",
            "Intervals are calibrated on houses like the training data, each median-income band on its own so "
            "that every band, not only all houses together, is covered at the nominal share; under drift "
            "(GET /drift) their coverage is not promised. The service tracks live coverage against feedback "
            "(GET /accuracy).",
            "Slices with few test houses (see the table) give uncertain figures.",
            *(
                [
                    "The test, CV and slice figures are of the training-split fit: the served refit has no held-out "
                    "figures of its own beyond the cross-validated estimate of what refitting gains (Evaluation data)."
                ]
                if refit
                else []
            ),
        ],
    )


def _refit_figures(refit: dict[str, Any]) -> dict[str, float]:
    """The refit's cross-validated effect (metrics.json ``refit``): RMSE of both fits and the gain (USD), coverage."""
    rmse, intervals = refit["rmse"], refit["intervals"]
    return {
        "rmse_training_share": rmse["share"],
        "rmse_all_rows": rmse["all_rows"],
        "rmse_gain": rmse["gain"],
        "rmse_gain_std": rmse["gain_std"],
        "interval_coverage": intervals["coverage"],
    }


def _refit_sentence(refit: dict[str, Any]) -> str:
    rmse, intervals = refit["rmse"], refit["intervals"]
    return (
        f"{refit['repeats']} repeats of {refit['folds']}-fold cross-validation over all {refit['rows']:,} "
        f"labelled block groups: fitted on all of the other folds, held-out RMSE {rmse['all_rows']:,.0f} USD; on a "
        f"training-split share of them, {rmse['share']:,.0f} USD (gain {rmse['gain']:,.0f} ± {rmse['gain_std']:,.0f} "
        f"USD, {rmse['relative_gain']:.2%}); the all-rows fit's {intervals['nominal']:.0%} intervals held "
        f"{intervals['coverage']:.1%} of held-out prices"
    )


def _cv_means(cv: dict[str, float]) -> dict[str, float]:
    return {name: cv[name] for name in ("rmse", "mae", "r2")}


def write_card(card: ModelCard, path: Path) -> Path:
    """Save the card (JSON) for logging beside the model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card.model_dump_json(indent=2) + "\n")
    return path
