"""`make figures`: every figure docs/summary.md and README.md quote, from the reports in reports/.

docs/summary.md is docs/summary.template.md filled in from reports/metrics.json and reports/data_validation.json
(written by the pipeline), reports/benchmark.json (written by `make bench`) and reports/bench_score.json (`make
bench-score`); README.md's benchmark tables (and the last `make soak`'s, reports/soak/soak.json), between their markers, come from the same files. So no page states a number by hand, and both pages say the same.
`make bench` runs this after the benchmark; `--check` only says whether both files are current.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from string import Template
from typing import Any

from devtools.paths import ROOT
from load_tests.benchmark import BATCH_PAUSE_S

REPORTS = ROOT / "reports"
TEMPLATE = ROOT / "docs" / "summary.template.md"
SUMMARY = ROOT / "docs" / "summary.md"
README = ROOT / "README.md"
README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
SCORE_START, SCORE_END = "<!-- bench-score:start -->", "<!-- bench-score:end -->"
SOAK_START, SOAK_END = "<!-- soak:start -->", "<!-- soak:end -->"


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
        # The README's benchmark tables, from the same functions and the same files.
        "benchmark": table(read(reports, "benchmark.json")),
        "bulk_scoring": score_table(reports),
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
    bands = [figures["coverage"] for figures in refit["slices"]["income_band"].values()]
    served = (
        f"The served model is that configuration refitted on all {refit['rows']:,} labelled rows, test split included"
        if refit["enabled"]
        else "The served model is that training-split fit"
    )
    return (
        f"{served}. In {refit['repeats']} repeats of\n{refit['folds']}-fold cross-validation over them, learning "
        "every row rather than a training-split share changed held-out RMSE\n"
        f"by {-rmse['gain']:+,.0f} ± {rmse['gain_std']:,.0f} USD ({-rmse['relative_gain']:+.1%}), and the refit's "
        f"intervals held {coverage:.1%} of held-out prices\n(from {min(bands):.1%} to {max(bands):.1%} per income "
        "band)."
    )


def render(reports: Path = REPORTS, template: Path = TEMPLATE) -> str:
    return Template(template.read_text()).substitute(figures(reports))


def table(results: dict[str, Any]) -> str:
    """The README's benchmark table (Markdown, with the line above it) from reports/benchmark.json's ``results``."""
    s, t, e = results["summary"], results["targets"], results["explain_c1"]
    stages = " · ".join(f"{name.replace('_', ' ')} {ms:.0f}" for name, ms in results["batch_stages_ms"].items())

    def mark(name: str) -> str:
        return "met" if t[name]["met"] else "**missed**"

    return "\n".join(
        [
            f"Model {results['model']['name']} v{results['model']['version']} ({results['model']['family']}), "
            f"{results['machine']['cpus']} cores, measured by `make bench` (wrk; both servers with 2 workers):",
            "",
            "| measure | value | target | |",
            "|---|---|---|---|",
            f"| single record, concurrency 1: p50 / p99 | {s['single_p50_ms']:.2f} / {s['single_p99_ms']:.2f} ms | p50 ≤ 1.5 ms | {mark('single_p50_ms')} |",
            f"| explaining one house (`POST /explain`), concurrency 1: p50 / p99 | {s['explain_p50_ms']:.2f} / {s['explain_p99_ms']:.2f} ms (`/predict` right after it: p50 {e['predict_p50_ms']:.2f} ms; load average {e['load_avg_1m']}) | p50 ≤ 10 ms | {mark('explain_p50_ms')} |",
            *([f"| the largest `/explain` accepted ({s['explain_limit_houses']:,} houses, `HOUSING_MAX_EXPLAIN_HOUSES`): slowest of {results['explain_limit']['runs']} | {s['explain_limit_ms']:,.0f} ms: {s['explain_limit_share_of_timeout']:.1%} of the server's {results['explain_limit']['timeout_s']} s timeout | ≤ a third of it | {mark('explain_limit_share_of_timeout')} |"]
              if "explain_limit_ms" in s else []),
            f"| 32 clients: throughput | {s['throughput_rps']:,.0f} req/s | | |",
            f"| the same model on LightGBM's booster (not compiled): p50 / 10,000-record batch / 32 clients | {s['booster_single_p50_ms']:.2f} ms / {s['booster_batch_10k_ms']:.0f} ms / {s['booster_throughput_rps']:,.0f} req/s | | |",
            f"| throughput ratio (compiled / booster) | {s['throughput_vs_booster']:.2f}× | ≥ 1× | {mark('throughput_vs_booster')} |",
            f"| 32 clients (one burst of keep-alive connections): requests per worker | {' / '.join(f'{n:,}' for n in s['per_worker_32'].values())} (least served: {s['least_worker_share']:.0%}) | | |",
            f"| 32 clients: p99 | {s['p99_32_ms']:.1f} ms | ≤ 50 ms | {mark('p99_32_ms')} |",
            f"| one 10,000-record batch | {s['batch_10k_ms']:.0f} ms | ≤ 100 ms | {mark('batch_10k_ms')} |",
            f"| the same batch {BATCH_PAUSE_S:g} s after the one before (the log writer idle) | {s['batch_10k_paused_ms']:.0f} ms | | |",
            *columns_rows(results),
            *shadow_rows(results),
            f"| the same batch through BentoML with the same request and answer and no model (`load_tests/batch_floor.py`: HTTP, JSON and pydantic alone) | {s['batch_floor_ms']:.0f} ms | | |",
            f"| the same batch in process, by stage (no HTTP; forest on {results['batch_stages_runtime']}) | {stages} ms; all but the forest {s['batch_without_forest_ms']:.0f} ms | | |",
            f"| costliest invalid body (of {len(results['invalid_bodies'])}, `reports/benchmark.json`) | {s['worst_invalid_ms']:.0f} ms: {s['invalid_vs_batch']:.2f}× the batch | ≤ 1× the largest legal batch | {mark('invalid_vs_batch')} |",
            f"| `mlflow models serve` as installed (uvicorn on asyncio + h11), same model and load | {s['mlflow_throughput_rps']:,.0f} req/s | | |",
            f"| throughput ratio (this service / MLflow as installed) | {s['throughput_ratio']:.1f}× | ≥ 4× | {mark('throughput_ratio')} |",
            f"| `mlflow models serve` given uvloop + httptools too | {s['mlflow_fast_throughput_rps']:,.0f} req/s | | |",
            f"| throughput ratio (this service / MLflow with uvloop + httptools) | {s['throughput_ratio_fast']:.1f}× | | |",
        ]
    )  # fmt: skip


def columns_rows(results: dict[str, Any]) -> list[str]:
    """The table's rows of the 10,000 houses as columns (POST /predict_columns); none in a benchmark from before it."""
    s, t = results["summary"], results["targets"]
    if "columns_10k_ms" not in s:
        return []
    mark = "met" if t["columns_10k_ms"]["met"] else "**missed**"
    return [
        f"| the same 10,000 houses as columns (`POST /predict_columns`) | {s['columns_10k_ms']:.0f} ms "
        f"({s['columns_10k_paused_ms']:.0f} ms with the log writer idle) | ≤ 100 ms | {mark} |"
    ]


def shadow_rows(results: dict[str, Any]) -> list[str]:
    """The table's rows of a challenger in shadow (load_tests/bench_shadow.py); none in a benchmark from before it."""
    s, t = results["summary"], results["targets"]
    if "shadow_single_p50_ratio" not in s:
        return []
    without = results["shadow"]["median"]["without"]

    def mark(name: str) -> str:
        return "met" if t[name]["met"] else "**missed**"

    return [
        f"| with a challenger in shadow (`housing shadow start`): single-record p50, beside the same service without "
        f"| {s['shadow_single_p50_ms']:.2f} ms against {without['single_p50_ms']:.2f} ms "
        f"({s['shadow_single_p50_ratio']:.2f}×) | ≤ 1.1× | {mark('shadow_single_p50_ratio')} |",
        f"| with a challenger in shadow: 32-client throughput, beside the same service without "
        f"| {s['shadow_throughput_rps']:,.0f} against {without['throughput_rps']:,.0f} req/s "
        f"({s['shadow_throughput_ratio']:.2f}×) | ≥ 0.9× | {mark('shadow_throughput_ratio')} |",
    ]


def score_table(reports: Path) -> str:
    """The bulk-scoring table (Markdown, with the line above it) from ``reports``' bench_score.json, if measured."""
    if not (reports / "bench_score.json").exists():
        return "Bulk scoring (`housing score`) is measured by `make bench-score`, which has not been run yet."
    r = read(reports, "bench_score.json")
    s = r["summary"]
    rows = [
        f"`housing score` of {s['rows']:,} houses (a {r['input_mb']:.0f} MB CSV into Parquet, {r['chunk_rows']:,} rows "
        f"a chunk) with `{r['model_uri']}`, {r['machine']['cpus']} cores, measured by `make bench-score`:",
        "",
        "| measure | value |",
        "|---|---|",
        f"| local engine: read, validate, price with bounds, write; the whole run (start-up and model load included) / the scoring loop | {s['local_rows_per_s']:,.0f} rows/s ({r['local']['seconds']:.0f} s) / {s['local_scoring_rows_per_s']:,.0f} rows/s ({r['local']['scoring_s']:.0f} s) |",
        f"| local engine: peak memory, all {s['rows']:,} rows / a tenth of them | {s['local_peak_rss_mb']:,.0f} MB / {s['local_tenth_peak_rss_mb']:,.0f} MB |",
        f"| baseline: MLflow pyfunc's `predict` of the same rows with bounds, in memory, one call in one process | {s['pyfunc_rows_per_s']:,.0f} rows/s (peak memory {s['pyfunc_peak_rss_mb']:,.0f} MB) |",
        f"| local engine / baseline | {s['local_vs_pyfunc']:.2f}× |",
    ]
    if "spark_tenth_rows_per_s" in s:
        rows.append(
            f"| Spark engine (`local[*]`), a tenth of the rows: the whole run / the scoring loop | {s['spark_tenth_rows_per_s']:,.0f} rows/s ({r['spark_tenth']['seconds']:.0f} s) / {s['spark_tenth_scoring_rows_per_s']:,.0f} rows/s ({r['spark_tenth']['scoring_s']:.0f} s) |"
        )
    return "\n".join(rows)


def soak_table(reports: Path) -> str:
    """The last `make soak` run (reports/soak/soak.json): warm-up against end, and the verdict."""
    if not (reports / "soak" / "soak.json").exists():
        return "`make soak` has not been run yet."
    r = read(reports / "soak", "soak.json")
    warm, last = r["samples"][0], r["samples"][-1]
    p99 = sorted(sample["p99_ms"] for sample in r["samples"])
    rps = sorted(sample["requests_per_s"] for sample in r["samples"])
    verdict = "; ".join(r["problems"]) or "nothing grew or drifted"

    def row(measure: str, key: str, unit: str = "", digits: int = 0) -> str:
        warm_value, last_value = (f"{sample[key]:,.{digits}f} {unit}".strip() for sample in (warm, last))
        return f"| {measure} | {warm_value} | {last_value} ({last[key] / warm[key] - 1:+.1%}) |"

    return "\n".join([
        f"The last `make soak` ({r['minutes']:g} minutes on {r['cpus']} cores, measured {r['measured']}): "
        f"{r['mix']['predict']}% one-house `/predict`, {r['mix']['predict_batch']}% {r['batch_houses']}-house "
        f"`/predict_batch`, aimed at {r['target_rps']:,.0f} req/s (half the measured {r['capacity_rps']:,.0f}); "
        f"{r['feedback']:,} feedbacks and {r['explained']:,} explanations beside them. "
        f"Verdict: {verdict}.",
        "",
        f"| measure (server's processes) | after the warm-up ({warm['t_s']:.0f} s) | at the end ({last['t_s']:.0f} s) |",
        "|---|---|---|",
        row("resident memory", "rss_mb", "MB", 1),
        row("open files", "open_files"),
        row("threads", "threads"),
        row("p50", "p50_ms", "ms", 2),
        row("p99", "p99_ms", "ms", 2),
        f"| p99 over the {len(p99)} intervals: median / worst | {p99[len(p99) // 2]:.1f} / {p99[-1]:.1f} ms | |",
        f"| requests per second over the intervals: median / least | {rps[len(rps) // 2]:,.0f} / {rps[0]:,.0f} | |",
        f"| failed or refused requests | {sum(s['errors'] + s['refused'] for s in r['samples'])} | |",
    ])  # fmt: skip


def render_readme(reports: Path = REPORTS, readme: Path = README) -> str:
    """``readme`` with the benchmark tables of ``reports`` between their markers."""
    content = readme.read_text()
    blocks = {(README_START, README_END): lambda: table(read(reports, "benchmark.json")),
              (SCORE_START, SCORE_END): lambda: score_table(reports),
              (SOAK_START, SOAK_END): lambda: soak_table(reports)}  # fmt: skip
    for (start, end), block in blocks.items():
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(content):
            raise SystemExit(f"{readme} has no {start} ... {end} section")
        text = f"{start}\n{block()}\n{end}"
        content = pattern.sub(lambda _, text=text: text, content)
    return content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/summary.md or README.md is not current")
    args = parser.parse_args()
    pages = {SUMMARY: render(), README: render_readme()}
    if args.check:
        stale = [path for path, text in pages.items() if not path.exists() or path.read_text() != text]
        for path in pages:
            print(f"{path.relative_to(ROOT)} is {'out of date: run make figures' if path in stale else 'current'}")
        sys.exit(1 if stale else 0)
    for path, text in pages.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
