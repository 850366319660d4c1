"""docs/summary.md and README.md's benchmark table: their figures are the reports' figures, and both are current."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scripts.figures import README, REPORTS, SUMMARY, render, render_readme


def test_committed_summary_is_current() -> None:
    assert SUMMARY.read_text() == render(), "docs/summary.md is out of date: run make figures"


def test_committed_readme_table_is_current() -> None:
    assert README.read_text() == render_readme(), "README.md's benchmark table is out of date: run make figures"


def test_figures_are_those_of_the_reports() -> None:
    doc = render()
    metrics = json.loads((REPORTS / "metrics.json").read_text())
    bench = json.loads((REPORTS / "benchmark.json").read_text())
    test, speed = metrics["test"], bench["summary"]
    assert f"RMSE **{test['rmse']:,.0f} USD**, MAE {test['mae']:,.0f} USD" in doc
    assert f"R² **{test['r2']:.3f}**" in doc
    refit = metrics["refit"]["rmse"]
    assert f"RMSE\nby {-refit['gain']:+,.0f} ± {refit['gain_std']:,.0f} USD" in doc
    for family in metrics["families"].values():
        assert f"| {family['cv']['rmse']:,.0f} ± {family['cv']['rmse_std']:,.0f} | {family['cv']['r2']:.3f} |" in doc
    assert f"v{bench['model']['version']} ({bench['model']['family']})" in doc
    assert f"| {speed['single_p50_ms']:.2f} / {speed['single_p99_ms']:.2f} ms |" in doc
    assert f"| {speed['throughput_rps']:,.0f} req/s |" in doc
    assert f"| {speed['batch_10k_ms']:.0f} ms |" in doc
    assert f"| {speed['throughput_ratio']:.1f}\N{MULTIPLICATION SIGN} |" in doc


def test_new_reports_change_the_page(tmp_path: Path) -> None:
    for name in ("metrics.json", "data_validation.json", "benchmark.json"):
        shutil.copy(REPORTS / name, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["test"]["rmse"] = 12_345.4
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    bench = json.loads((tmp_path / "benchmark.json").read_text())
    bench["summary"]["throughput_rps"] = 4_321.0
    (tmp_path / "benchmark.json").write_text(json.dumps(bench))

    doc = render(tmp_path)
    assert "RMSE **12,345 USD**" in doc
    assert "| 4,321 req/s |" in doc
