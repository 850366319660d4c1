"""`make summary`: docs/summary.md from docs/summary.template.md and the figures in reports/.

The model figures come from reports/metrics.json and reports/data_validation.json (written by
the pipeline), the API figures from reports/benchmark.json (written by `make bench`), so the
page never states a number by hand. `--check` only says whether docs/summary.md is current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from string import Template
from typing import Any

from load_tests.benchmark import ROOT, table

REPORTS = ROOT / "reports"
TEMPLATE = ROOT / "docs" / "summary.template.md"
SUMMARY = ROOT / "docs" / "summary.md"


def read(reports: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((reports / name).read_text()))


def family_rows(metrics: dict[str, Any]) -> str:
    """One table row per family, best cross-validated RMSE first, the winner in bold."""
    ranked = sorted(metrics["families"].items(), key=lambda item: item[1]["cv"]["rmse"])
    return "\n".join(
        f"| {f'**{name}**' if name == metrics['winner'] else name} | "
        f"{family['cv']['rmse']:,.0f} ± {family['cv']['rmse_std']:,.0f} | {family['cv']['r2']:.3f} |"
        for name, family in ranked
    )


def figures(reports: Path) -> dict[str, str]:
    """Every figure the template names, formatted, from the report files."""
    metrics, validation = read(reports, "metrics.json"), read(reports, "data_validation.json")
    test, floor = metrics["test"], metrics["quality_floor"]
    return {
        "rows": f"{validation['rows']:,}",
        "train_rows": f"{metrics['train_rows']:,}",
        "test_rows": f"{metrics['test_rows']:,}",
        "families": family_rows(metrics),
        "winner": metrics["winner"],
        "test_rmse": f"{test['rmse']:,.0f}",
        "test_mae": f"{test['mae']:,.0f}",
        "test_r2": f"{test['r2']:.3f}",
        "floor_rmse": f"{floor['max_rmse']:,.0f}",
        "floor_r2": f"{floor['min_r2']:g}",
        "floor_verdict": "met" if floor["met"] else "**missed**",
        "intervals": interval_sentence(metrics.get("intervals")),
        "refit": refit_sentence(metrics["refit"]),
        # The README's benchmark table, from the same function and the same file.
        "benchmark": table(read(reports, "benchmark.json")),
    }


def interval_sentence(intervals: dict | None) -> str:
    """How the price intervals did on the test split, or that the model has none."""
    if intervals is None:
        return "The model gives no price intervals."
    return (
        f"Every price comes with a conformal interval at {intervals['nominal']:.0%} nominal coverage:\n"
        f"{intervals['coverage']:.1%} of test prices fell inside theirs, median width "
        f"{intervals['median_width']:,.0f} USD."
    )


def refit_sentence(refit: dict[str, Any]) -> str:
    """What the served model learned from, and what learning every labelled row gains on held-out houses."""
    rmse, coverage = refit["rmse"], refit["intervals"]["coverage"]
    served = (
        f"The served model is that configuration refitted on all {refit['rows']:,} labelled rows, test split included"
        if refit["enabled"]
        else "The served model is that training-split fit"
    )
    return (
        f"{served}. In {refit['repeats']} repeats of\n{refit['folds']}-fold cross-validation over them, learning "
        "every row rather than a training-split share changed held-out RMSE\n"
        f"by {-rmse['gain']:+,.0f} ± {rmse['gain_std']:,.0f} USD ({-rmse['relative_gain']:+.1%}), and the refit's "
        f"intervals held {coverage:.1%} of held-out prices."
    )


def render(reports: Path = REPORTS, template: Path = TEMPLATE) -> str:
    return Template(template.read_text()).substitute(figures(reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/summary.md is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = SUMMARY.exists() and SUMMARY.read_text() == text
        print(f"{SUMMARY.relative_to(ROOT)} is {'current' if current else 'out of date: run make summary'}")
        sys.exit(0 if current else 1)
    SUMMARY.write_text(text)
    print(f"wrote {SUMMARY.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
