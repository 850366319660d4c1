"""Insights from the prediction log, the rendering: ``report.md`` with PNG figures, and ``report.json``.

operations.insights works out every figure; this module draws them and writes the report around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS
from operations.insights import PERCENTILES, duration, utc
from training import plots


def write_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    """``report.json``, ``report.md`` and the figures in ``out/figures``; the files written."""
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for old in figures_dir.glob("*.png"):
        old.unlink()  # a figure this period has no data for must not survive from an earlier report
    written = []
    for name, draw in FIGURES.items():
        if (fig := draw(report)) is not None:
            plots.save(fig, figures_dir / f"{name}.png")
            written.append(figures_dir / f"{name}.png")
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report, {path.stem for path in written}))
    return [out / "report.json", out / "report.md", *written]


# -- figures ------------------------------------------------------------------
# Each returns None when its section has nothing to draw.


def _traffic_figure(report: Mapping[str, Any]) -> Any:
    traffic = report["traffic"]
    if not traffic["buckets"]:
        return None
    starts = _dates([b["start"] for b in traffic["buckets"]])
    width = traffic["bucket_s"] / 86_400 * 0.9  # matplotlib dates are in days
    fig, (requests, houses) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    requests.bar(starts, [b["requests"] for b in traffic["buckets"]], width=width, align="edge")
    houses.bar(starts, [b["houses"] for b in traffic["buckets"]], width=width, align="edge", color="tab:orange")
    requests.set(ylabel="requests", title=f"Traffic in buckets of {duration(traffic['bucket_s'])} (UTC)")
    houses.set(ylabel="houses priced")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _latency_figure(report: Mapping[str, Any]) -> Any:
    by_endpoint = report["latency"]["by_endpoint"]
    if not by_endpoint:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(by_endpoint) + 2))
    names = list(by_endpoint)
    for offset, (key, color) in enumerate(zip(PERCENTILES, ("tab:blue", "tab:orange", "tab:red"), strict=True)):
        positions = np.arange(len(names)) + (offset - 1) * 0.27
        values = [by_endpoint[n][key] for n in names]
        ax.barh(positions, values, height=0.25, color=color, label=key.removesuffix("_ms"))
    ax.set_yticks(np.arange(len(names)), [f"/{n}" for n in names])
    ax.set(xlabel="request latency (ms)", title="Latency percentiles per endpoint")
    ax.legend()
    fig.tight_layout()
    return fig


def _inputs_figure(report: Mapping[str, Any]) -> Any:
    inputs = report["inputs"]
    if inputs["status"] != "ok":
        return None
    fig, axes = plt.subplots(3, 3, figsize=(11, 10))
    for ax, name in zip(axes.flat, NUMERIC_COLUMNS, strict=False):
        figures = inputs["features"][name]
        training, logged = figures["training_deciles"], figures["log_deciles"]
        if logged is None:
            ax.set(title=f"{name}: no value logged")
            continue
        ax.plot(training, logged, marker="o")
        low, high = min(*training, *logged), max(*training, *logged)
        ax.plot([low, high], [low, high], color="black", linewidth=1)
        ax.set(title=f"{name} (PSI {figures['psi']:.2f})", xlabel="training deciles", ylabel="log deciles")
    shares = inputs["features"][CATEGORICAL_COLUMN]
    categories = list(shares["training_shares"])
    positions = np.arange(len(categories))
    last = axes.flat[-1]
    last.bar(positions - 0.2, list(shares["training_shares"].values()), width=0.4, label="training")
    last.bar(positions + 0.2, list(shares["log_shares"].values()), width=0.4, label="log")
    last.set_xticks(positions, categories, rotation=30, fontsize=7)
    last.set(title=f"{CATEGORICAL_COLUMN} (PSI {shares['psi']:.2f})", ylabel="share")
    last.legend()
    fig.suptitle("Logged inputs against the training data")
    fig.tight_layout()
    return fig


def _slices_figure(report: Mapping[str, Any], key: str, label: str) -> Any:
    groups = report["feedback"]["by"]
    if not any(figures[key] is not None for slices in groups.values() for figures in slices.values()):
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(11, 3.5))
    for ax, (slice_, slices) in zip(axes, groups.items(), strict=True):
        scored = {name: figures for name, figures in slices.items() if figures[key] is not None}
        ax.barh(list(scored), [figures[key] for figures in scored.values()])
        ax.set(title=slice_, xlabel=label)
    fig.tight_layout()
    return fig


def _drift_figure(report: Mapping[str, Any]) -> Any:
    scored = [w for w in report["drift_over_time"]["windows"] if "psi" in w]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    starts = _dates([w["start"] for w in scored])
    for name in scored[0]["psi"]:
        ax.plot(starts, [w["psi"][name] for w in scored], marker="o", label=name)
    ax.axhline(report["drift_over_time"]["psi_threshold"], color="black", linestyle="--", linewidth=1)
    ax.set(ylabel="PSI against training", title="Drift over time (window start, UTC)")
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _dates(timestamps: Sequence[float]) -> np.ndarray:
    """Times (s since the epoch, UTC) as the datetimes matplotlib draws, to the millisecond."""
    return np.round(np.asarray(timestamps) * 1000).astype("datetime64[ms]")


FIGURES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "traffic": _traffic_figure,
    "latency": _latency_figure,
    "inputs": _inputs_figure,
    "error_by_slice": lambda report: _slices_figure(report, "mae_usd", "MAE (USD)"),
    "coverage_by_slice": lambda report: _slices_figure(report, "coverage", "interval coverage"),
    "drift_over_time": _drift_figure,
}


# -- Markdown -----------------------------------------------------------------


def render_markdown(report: Mapping[str, Any], figures: set[str]) -> str:
    """The report as Markdown, linking the figures that were drawn."""
    period = report["period"]
    span = (
        f"houses priced from {utc(period['first_ts'])} to {utc(period['last_ts'])}"
        if period["first_ts"] is not None
        else "no priced houses"
    )
    parts = [
        "# Insights from the prediction log\n",
        f"Log {report['source']}; {span}; written {utc(report['generated_at'])}.\n",
        "## Findings\n",
        *(f"- {sentence}" for sentence in report["findings"]),
        "",
        _traffic_section(report),
        _latency_section(report),
        _inputs_section(report),
        _feedback_section(report),
        _drift_section(report),
    ]
    text = "\n".join(parts)
    for name in sorted(figures):
        text = text.replace(f"<!-- figure:{name} -->", f"![{name}](figures/{name}.png)")
    # Sections without data drew no figure: drop the placeholders.
    return "\n".join(line for line in text.splitlines() if not line.startswith("<!-- figure:")) + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _number(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _traffic_section(report: Mapping[str, Any]) -> str:
    traffic = report["traffic"]
    return (
        "## Traffic over time\n\n"
        f"{traffic['requests']:,} requests, {traffic['houses']:,} houses, in buckets of "
        f"{duration(traffic['bucket_s'])} (from the per-minute traffic totals).\n\n<!-- figure:traffic -->\n"
    )


def _latency_section(report: Mapping[str, Any]) -> str:
    latency = report["latency"]
    rows = [
        (name, figures["requests"], *(_number(figures[key], ".1f") for key in [*PERCENTILES, "mean_ms"]))
        for name, figures in [("all", latency["overall"]), *((f"/{k}", v) for k, v in latency["by_endpoint"].items())]
    ]
    table = _table(["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "mean ms"], rows)
    return (
        "## Latency\n\nNearest-rank percentiles of the logged request latencies (one per request).\n\n"
        f"{table}\n\n<!-- figure:latency -->\n"
    )


def _inputs_section(report: Mapping[str, Any]) -> str:
    inputs = report["inputs"]
    head = "## Inputs against the training data\n\n"
    if inputs["status"] == "no_profile":
        return head + "No reference profile of the training data was found: nothing to compare with.\n"
    if inputs["status"] != "ok":
        return head + f"Only {inputs['rows']:,} priced houses; a comparison needs {inputs['min_rows']:,}.\n"
    rows = [
        (name, f"{f['psi']:.3f}", _number(f["p_value"], ".2g"), _number(f.get("training_median"), ",.4g"),
         _number(f.get("log_median"), ",.4g"), "**drift**" if f["drifted"] else "ok")
        for name, f in inputs["features"].items()
    ]  # fmt: skip
    thresholds = inputs["thresholds"]
    return (
        f"{head}{inputs['rows']:,} priced houses against the served model's training profile; a feature drifts "
        f"when PSI > {thresholds['psi']} or p < {thresholds['p_value']}.\n\n"
        + _table(["feature", "PSI", "p-value", "training median", "log median", "verdict"], rows)
        + "\n\n<!-- figure:inputs -->\n"
    )


def _feedback_section(report: Mapping[str, Any]) -> str:
    feedback = report["feedback"]
    rows = [
        (slice_, label, f["n"], _number(f["mae_usd"]), _number(f["rmse_usd"]), _number(f["bias_usd"], "+,.0f"),
         f["with_bounds"], _number(f["coverage"], ".1%"))
        for slice_, label, f in [
            ("all", "", feedback["overall"]),
            *((s, label, f) for s, groups in feedback["by"].items() for label, f in groups.items()),
        ]
    ]  # fmt: skip
    header = ["slice", "value", "houses", "MAE USD", "RMSE USD", "mean error USD", "with bounds", "coverage"]
    table = _table(header, rows)
    untrusted = feedback["untrusted_left_out"]
    note = f" {untrusted:,} answers sent without the feedback token are left out." if untrusted else ""
    if feedback["overall"]["n"] and not feedback["overall"]["with_bounds"]:
        note += (
            " No house with feedback has interval bounds in the log (lower_usd and upper_usd are empty), so "
            "coverage is not measured."
        )
    return (
        "## Error and interval coverage on feedback\n\n"
        "Authenticated feedback joined with its prediction; error is price minus actual; coverage is the share of "
        f"houses with bounds whose actual price lies within them (income bands in tens of thousands of USD).{note}\n\n"
        f"{table}\n\n<!-- figure:error_by_slice -->\n\n<!-- figure:coverage_by_slice -->\n"
    )


def _drift_section(report: Mapping[str, Any]) -> str:
    drift = report["drift_over_time"]
    head = "## Drift over time\n\n"
    if not drift["windows"]:
        return head + "Nothing to score.\n"
    names = next((list(w["psi"]) for w in drift["windows"] if "psi" in w), [])
    rows = [
        (utc(w["start"]), w["rows"], *(f"{w['psi'][n]:.3f}" if "psi" in w else "n/a" for n in names))
        for w in drift["windows"]
    ]
    return (
        f"{head}PSI per feature in equal time windows; a window needs {drift['min_rows']:,} houses to be scored.\n\n"
        + _table(["window start", "houses", *names], rows)
        + "\n\n<!-- figure:drift_over_time -->\n"
    )
