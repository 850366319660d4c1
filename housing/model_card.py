"""A registered version's model card, after Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019).

The register stage writes the card (training.card_builder) beside the model file,
so it travels with the version into the registry, the BentoML store and the
image; the registered version's description in MLflow is its Markdown. The
service answers it at ``GET /model/card``. Its sections are the paper's nine:
model details, intended use, factors, metrics, evaluation data, training data,
quantitative analyses, ethical considerations, caveats and recommendations.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The card's file in the model's folder (housing.model_format.extra_file gives its path in the MLflow model).
CARD_FILE = "model_card.json"


class SliceFigures(BaseModel):
    """Error and interval figures of the test houses in one slice (USD; coverage is a share)."""

    rows: int
    rmse: float
    mae: float
    coverage: float | None = None
    mean_width: float | None = None
    median_width: float | None = None


class ModelCard(BaseModel):
    """What a version is, what it is for, how well it does, and where it should not be trusted.

    Attributes
    ----------
    metrics : test figures (``rmse``, ``mae`` in USD, ``r2``), their CV means, and the intervals' coverage and widths.
    slices : per slicing column (``ocean_proximity``, ``income_band``), each value's test figures.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_details: dict[str, Any]
    intended_use: dict[str, list[str]]
    factors: dict[str, list[str]]
    metrics: dict[str, dict[str, float] | None]
    evaluation_data: dict[str, Any]
    training_data: dict[str, Any]
    slices: dict[str, dict[str, SliceFigures]] = Field(description="Quantitative analyses: the figures per slice.")
    ethical_considerations: list[str]
    caveats_and_recommendations: list[str]

    def with_version(self, name: str, version: str) -> ModelCard:
        """The card naming the registered version it describes (the version is known only after registering)."""
        return self.model_copy(update={"model_details": {**self.model_details, "name": name, "version": version}})

    def to_markdown(self) -> str:
        """The card as Markdown: the registered version's description in MLflow."""
        details = self.model_details
        title = f"# Model card: {details.get('name', 'unregistered model')} v{details.get('version', '?')}"
        sections = [
            title,
            _section("Model details", _pairs(details)),
            _section("Intended use", _lists(self.intended_use)),
            _section("Factors", _lists(self.factors)),
            _section("Metrics", _metrics(self.metrics)),
            _section("Evaluation data", _pairs(self.evaluation_data)),
            _section("Training data", _pairs(self.training_data)),
            _section("Quantitative analyses", _slices(self.slices)),
            _section("Ethical considerations", _bullets(self.ethical_considerations)),
            _section("Caveats and recommendations", _bullets(self.caveats_and_recommendations)),
        ]
        return "\n\n".join(sections) + "\n"


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}"


def _pairs(values: dict[str, Any]) -> str:
    return "\n".join(f"- **{key.replace('_', ' ')}**: {value}" for key, value in values.items())


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _lists(groups: dict[str, list[str]]) -> str:
    return "\n\n".join(f"**{name.replace('_', ' ')}**\n\n{_bullets(items)}" for name, items in groups.items())


def _metrics(metrics: dict[str, dict[str, float] | None]) -> str:
    lines = ["| figures | " + " | ".join(["RMSE (USD)", "MAE (USD)", "R²"]) + " |", "|---|---|---|---|"]
    for name in ("test", "cv"):
        figures = metrics.get(name) or {}
        if figures:
            lines.append(f"| {name} | {figures['rmse']:,.0f} | {figures['mae']:,.0f} | {figures['r2']:.4f} |")
    intervals = metrics.get("intervals")
    if intervals:
        lines += [
            "",
            f"Price intervals at {intervals['nominal']:.0%} nominal coverage: {intervals['coverage']:.1%} of test "
            f"prices inside; width mean {intervals['mean_width']:,.0f} USD, "
            f"median {intervals['median_width']:,.0f} USD.",
        ]
    return "\n".join(lines)


def _slices(slices: dict[str, dict[str, SliceFigures]]) -> str:
    lines = ["| slice | houses | RMSE (USD) | MAE (USD) | coverage | mean width (USD) |", "|---|---|---|---|---|---|"]
    for column, values in slices.items():
        for value, f in values.items():
            coverage = "" if f.coverage is None else f"{f.coverage:.1%}"
            width = "" if f.mean_width is None else f"{f.mean_width:,.0f}"
            lines.append(f"| {column} = {value} | {f.rows:,} | {f.rmse:,.0f} | {f.mae:,.0f} | {coverage} | {width} |")
    return "\n".join(lines)


def shadow_section(comparison: dict[str, Any], shadowed: int, decision: str) -> str:
    """The section a shadow adds to the challenger's card (its registered description): what it was judged on
    (housing.shadow_stats ``compare``), and the decision."""
    diff, labelled = comparison["price_difference"], comparison["labelled"]
    lines = [
        f"Priced {shadowed:,} live houses in the shadow of v{comparison['champion_version']}; "
        f"{comparison['houses_compared']:,} compared.",
    ]
    if diff["houses"]:
        lines.append(f"Price difference (challenger minus champion): mean {diff['mean_usd']:,.0f} USD "
                     f"({diff['mean_pct']:+.2f}%), median {diff['median_usd']:,.0f} USD, 95th percentile of the "
                     f"absolute difference {diff['p95_abs_usd']:,.0f} USD ({diff['p95_abs_pct']:.2f}%).")  # fmt: skip
    if labelled["houses"]:
        champion, challenger = labelled["champion"], labelled["challenger"]
        lines += ["", "| on the same houses with feedback | houses | RMSE (USD) | MAE (USD) |", "|---|---|---|---|",
                  f"| champion | {labelled['houses']:,} | {champion['rmse']:,.0f} | {champion['mae']:,.0f} |",
                  f"| challenger | {labelled['houses']:,} | {challenger['rmse']:,.0f} | {challenger['mae']:,.0f} |",
                  "", f"Paired one-sided Wilcoxon test of the squared errors: p = {labelled['wilcoxon_p']:.3g} "
                      f"(t-test p = {labelled['t_test_p']:.3g})."]  # fmt: skip
    lines += ["", f"Decision: {decision}"]
    return _section("Live shadow evaluation", "\n".join(lines))


# MLflow's SQL stores keep a registered version's description in VARCHAR(5000): a longer card fails to save there.
MAX_DESCRIPTION_CHARS = 5000
CUT = "\n\n… (shortened to fit MLflow's description limit)"


def with_section(card: str, section: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """``card`` (a registered version's description) with ``section`` appended, both within ``limit`` characters:
    the section stays whole and the card before it is shortened if the two do not fit."""
    whole = f"{card.rstrip()}\n\n{section}"
    if len(whole) <= limit:
        return whole
    room = max(0, limit - len(section) - len(CUT) - 2)
    return f"{card.rstrip()[:room]}{CUT}\n\n{section}"[-limit:]
