"""Diagnostic figures of a regression model (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # headless: pipeline stages and CI have no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def residuals(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    """Residual (actual - predicted, USD) against predicted price."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(y_pred, y_true - y_pred, s=4, alpha=0.3)
    ax.axhline(0, color="black", linewidth=1)
    ax.set(xlabel="predicted price (USD)", ylabel="residual (USD)", title=title)
    fig.tight_layout()
    return fig


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    """Predicted against actual price with the identity line."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(y_true, y_pred, s=4, alpha=0.3)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set(xlabel="actual price (USD)", ylabel="predicted price (USD)", title=title)
    fig.tight_layout()
    return fig


def feature_importance(importance: Mapping[str, float], title: str, top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` most important features."""
    ranked = sorted(importance.items(), key=lambda item: item[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ranked) + 1.2))
    ax.barh([name for name, _ in ranked], [value for _, value in ranked])
    ax.set(xlabel="importance", title=title)
    fig.tight_layout()
    return fig


def family_comparison(scores: Mapping[str, float], metric: str) -> Figure:
    """Bar chart of each family's cross-validated ``metric``."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(scores), list(scores.values()))
    ax.set(ylabel=f"CV {metric}", title=f"Cross-validated {metric} by model family")
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
