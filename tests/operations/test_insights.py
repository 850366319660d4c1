"""`housing report`: the sections' computations, and the report on a log filled directly on SQLite and PostgreSQL.

The report on a log a real server filled is in test_insights_server.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.drift_stats import reference_profile
from housing.log.queries import LogReader
from housing.log.schema import MIGRATIONS
from housing.log.store import SQLiteStore, migrate
from housing.params import Params
from housing.settings import settings
from operations.cli import main
from operations.insights import (
    ReportOptions,
    build_report,
    drift_over_time,
    feedback_slices,
    latency_percentiles,
    traffic_over_time,
)
from operations.insights_report import write_report
from tests.operations.insights_sql import assert_drift_matches_sql, assert_report_matches_sql, housing_report
from tests.stores.engines import LogDatabase
from tests.synthetic import synthetic_housing
from tests.workspace import ROOT

EDGES = [0.0, 1.5, 3.0, 4.5, 6.0]


def options(**changes: Any) -> ReportOptions:
    defaults: dict[str, Any] = {"since": 0.0, "until": time.time(), "income_bands": EDGES, "psi_threshold": 0.2,
                                "p_value": 0.001, "min_rows": 50, "windows": 3}  # fmt: skip
    return ReportOptions(**{**defaults, **changes})


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return reference_profile(synthetic_housing(2000, seed=0), seed=0)


# -- the computations ---------------------------------------------------------


def test_traffic_fills_quiet_buckets_and_finds_the_first_peak() -> None:
    slots = pd.DataFrame({"slot": [100, 101, 105, 160], "requests": [3, 9, 1, 9], "houses": [3, 40, 1, 12]})
    traffic = traffic_over_time(slots, bucket_s=300)
    assert [b["start"] for b in traffic["buckets"]] == [6000.0 + 300 * i for i in range(13)]
    assert traffic["buckets"][0] == {"start": 6000.0, "requests": 12, "houses": 43}
    assert traffic["buckets"][1]["requests"] == 1
    assert traffic["buckets"][2] == {"start": 6600.0, "requests": 0, "houses": 0}
    assert traffic["peak"] == {"start": 6000.0, "requests": 12, "houses": 43}
    assert (traffic["requests"], traffic["houses"]) == (22, 56)
    # An hour of minutes fits in minute buckets; three days do not.
    assert traffic_over_time(slots)["bucket_s"] == 60
    assert traffic_over_time(pd.concat([slots, slots.assign(slot=slots.slot + 3 * 1440)]))["bucket_s"] == 3600


def test_latency_is_one_value_per_request_and_nearest_rank() -> None:
    # A batch of 50 houses is one request: its latency counts once, not 50 times.
    rows = [("batch", "predict_batch", 900.0)] * 50 + [(f"r{i}", "predict", float(i)) for i in range(1, 101)]
    latency = latency_percentiles(pd.DataFrame(rows, columns=["request_id", "endpoint", "latency_ms"]))
    assert latency["overall"]["requests"] == 101
    assert (latency["overall"]["p50_ms"], latency["overall"]["p99_ms"]) == (51.0, 100.0)
    assert latency["by_endpoint"]["predict"] == {"requests": 100, "p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0,
                                                 "mean_ms": 50.5}  # fmt: skip
    assert latency["by_endpoint"]["predict_batch"]["p50_ms"] == 900.0


def test_error_and_coverage_per_slice_count_only_houses_with_bounds() -> None:
    feedback = pd.DataFrame(
        {
            "price_usd": [100.0, 200.0, 300.0, 400.0, 500.0],
            "actual_price_usd": [110.0, 150.0, 300.0, 460.0, 500.0],
            "lower_usd": [90.0, 180.0, 250.0, np.nan, 400.0],
            "upper_usd": [120.0, 220.0, 350.0, np.nan, 600.0],
            "ocean_proximity": ["INLAND", "INLAND", "NEAR BAY", "NEAR BAY", "INLAND"],
            "median_income": [1.5, 1.6, 3.0, 7.0, 0.5],
        }
    )
    slices = feedback_slices(feedback, EDGES)
    overall = slices["overall"]
    assert (overall["n"], overall["with_bounds"], overall["coverage"]) == (5, 4, 0.75)
    assert overall["mae_usd"] == pytest.approx((10 + 50 + 0 + 60 + 0) / 5)
    assert overall["bias_usd"] == pytest.approx((-10 + 50 + 0 - 60 + 0) / 5)
    assert overall["rmse_usd"] == pytest.approx(np.sqrt((100 + 2500 + 3600) / 5))
    inland = slices["by"]["ocean_proximity"]["INLAND"]
    assert (inland["n"], inland["with_bounds"], inland["coverage"]) == (3, 3, pytest.approx(2 / 3))
    near_bay = slices["by"]["ocean_proximity"]["NEAR BAY"]
    assert (near_bay["with_bounds"], near_bay["coverage"]) == (1, 1.0)
    # Bands are closed on the right, as the split's: 1.5 is in the first band, 3.0 in the second.
    bands = slices["by"]["income_band"]
    assert list(bands) == ["0-1.5", "1.5-3", "6+"]
    assert (bands["0-1.5"]["n"], bands["1.5-3"]["n"], bands["6+"]["n"]) == (2, 2, 1)
    assert bands["6+"]["coverage"] is None


def test_drift_windows_score_only_when_full_enough(profile: dict[str, Any]) -> None:
    houses = synthetic_housing(400, seed=3)[list(FEATURE_COLUMNS)]
    # The second half of the period sees incomes doubled.
    shifted = houses.assign(median_income=houses.median_income * 2)
    inputs = pd.concat([houses.assign(ts=np.linspace(0, 99, 400)), shifted.assign(ts=np.linspace(100, 199, 400))])
    inputs = pd.concat([inputs, houses.head(10).assign(ts=np.linspace(300, 400, 10))])
    drift = drift_over_time(profile, inputs, options(windows=4, min_rows=50))
    windows = drift["windows"]
    assert [w["rows"] for w in windows] == [400, 400, 0, 10]
    assert (windows[0]["start"], windows[-1]["end"]) == (0.0, 400.0)
    assert windows[0]["psi"]["median_income"] < 0.1 < 0.2 < windows[1]["psi"]["median_income"]
    assert windows[1]["drifted_features"] == ["median_income"]
    assert ["psi" in w for w in windows] == [True, True, False, False]


# -- the report ---------------------------------------------------------------


def fill(log_db: LogDatabase, start: float, houses: pd.DataFrame, bounds: bool) -> None:
    """Log ``houses`` as 30 single requests then batches, a minute apart from ``start``; feedback for every
    third house (every ninth without the token), prices 5% off, intervals +-10% when ``bounds``."""
    log = log_db.log()
    rng = np.random.default_rng(7)
    sizes = [1] * 30 + [60] * ((len(houses) - 30) // 60)
    first = 0
    for number, size in enumerate(sizes):
        request = houses.iloc[first : first + size]
        price = request[TARGET_COLUMN].to_numpy() * rng.choice([0.95, 1.05], size)
        interval = price * (0.1 if number % 3 else 0.03)
        rows = [
            {"request_id": f"req-{number}", "idx": i, "endpoint": "predict" if size == 1 else "predict_batch",
             "ts": start + 60 * number + i * 1e-3, "model_version": "1", "latency_ms": float(rng.gamma(2, 3 + size)),
             "price_usd": price[i], "lower_usd": price[i] - interval[i] if bounds else None,
             "upper_usd": price[i] + interval[i] if bounds else None,
             **{name: (None if pd.isna(value) else value) for name, value in house[list(FEATURE_COLUMNS)].items()}}
            for i, (_, house) in enumerate(request.iterrows())
        ]  # fmt: skip
        log.add(rows)
        first += size
    assert log.flush()
    for number, size in enumerate(sizes):
        for i in range(0, size, 3):
            actual = float(houses.iloc[sum(sizes[:number]) + i][TARGET_COLUMN])
            log.record_feedback(f"req-{number}", i, actual, authenticated=(number + i) % 9 != 0)
    log.close()


@pytest.fixture
def report_env(
    log_db: LogDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, profile: dict[str, Any]
) -> Iterator[list[str]]:
    """The log's engine for `housing report` (HOUSING_DATABASE_URL on PostgreSQL), and its common arguments."""
    if log_db.url:
        monkeypatch.setenv("HOUSING_DATABASE_URL", log_db.url)
    else:
        monkeypatch.delenv("HOUSING_DATABASE_URL", raising=False)
    settings.cache_clear()
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    yield ["--db", str(log_db.folder / "p.db"), "--profile", str(tmp_path / "profile.json"),
           "--project-dir", str(ROOT), "--min-rows", "100", "--windows", "3"]  # fmt: skip
    settings.cache_clear()


def test_report_equals_sql_with_intervals(
    log_db: LogDatabase, report_env: list[str], tmp_path: Path, params: Params, profile: dict[str, Any]
) -> None:
    houses = synthetic_housing(630, seed=5)
    fill(log_db, time.time() - 3 * 3600, houses, bounds=True)
    report = housing_report(*report_env, "--out", str(tmp_path / "out"))
    edges = params.prepare.income_bands
    store = log_db.store()
    assert_report_matches_sql(report, store, edges)
    assert_drift_matches_sql(report, store, profile)
    overall = report["feedback"]["overall"]
    # Prices 5% off with +-10% intervals on two requests of three and +-3% on the rest: some covered, some not.
    assert overall["with_bounds"] == overall["n"] > 0
    assert 0.3 < overall["coverage"] < 1
    assert report["feedback"]["untrusted_left_out"] > 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"{overall['coverage']:.1%}" in text
    assert any(s.startswith(f"The price interval held the actual price for {overall['coverage']:.1%}")
               for s in report["findings"])  # fmt: skip
    figures = {path.name for path in (tmp_path / "out" / "figures").iterdir()}
    assert figures == {"traffic.png", "latency.png", "inputs.png", "error_by_slice.png", "coverage_by_slice.png",
                       "drift_over_time.png"}  # fmt: skip
    for name in figures:
        assert f"](figures/{name})" in text

    # --since leaves out the first hour's requests, and every figure follows.
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 2.5 * 3600))
    later = housing_report(*report_env, "--out", str(tmp_path / "later"), "--since", since)
    assert 0 < later["totals"]["houses"] < report["totals"]["houses"]
    assert_report_matches_sql(later, store, edges)


def test_without_bounds_coverage_is_not_measured_and_the_report_says_so(
    log_db: LogDatabase, report_env: list[str], tmp_path: Path
) -> None:
    fill(log_db, time.time() - 3600, synthetic_housing(150, seed=6), bounds=False)
    report = housing_report(*report_env, "--out", str(tmp_path / "out"))
    overall = report["feedback"]["overall"]
    assert overall["n"] > 0
    assert (overall["with_bounds"], overall["coverage"]) == (0, None)
    assert any(s.startswith(f"None of the {overall['n']} houses with feedback has interval bounds")
               for s in report["findings"])  # fmt: skip
    assert "coverage is not measured" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "figures" / "coverage_by_slice.png").exists()


def test_an_empty_log_gives_a_report_that_says_so(tmp_path: Path) -> None:
    report = housing_report("--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "out"),
                            "--profile", str(tmp_path / "none.json"), "--project-dir", str(ROOT))  # fmt: skip
    assert report["totals"] == {"houses": 0, "requests": 0}
    assert report["inputs"]["status"] == "no_profile"
    assert report["findings"][0] == "No traffic was logged in the period."
    assert not list((tmp_path / "out" / "figures").iterdir())
    assert "no priced houses" in (tmp_path / "out" / "report.md").read_text()


def test_the_findings_follow_the_data(profile: dict[str, Any], tmp_path: Path) -> None:
    """Two logs that differ only in where the error is: the findings name a different slice each time."""
    for worst in ("INLAND", "NEAR BAY"):
        database = LogDatabase("sqlite", tmp_path / worst, None)
        (tmp_path / worst).mkdir()
        houses = synthetic_housing(330, seed=8)
        # Dearer houses: the same 5% error is twice as many USD.
        houses.loc[houses.ocean_proximity == worst, TARGET_COLUMN] *= 2
        fill(database, time.time() - 3600, houses, bounds=False)
        report = build_report(LogReader(database.store()), profile, options())
        database.close()
        error = next(s for s in report["findings"] if s.startswith("On "))
        figures = report["feedback"]["by"]["ocean_proximity"][worst]
        assert f"error is highest for ocean_proximity = {worst} (MAE {figures['mae_usd']:,.0f} USD" in error


def test_a_log_older_than_the_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A log the service wrote before the latest migration: the report, read-only, cannot read it.
    latest = MIGRATIONS[-1].version
    store = SQLiteStore(tmp_path / "old.db")
    migrate(store)
    with store.transaction() as session:
        session.execute("DELETE FROM schema_migrations WHERE version = ?", [latest])
    store.close()
    args = ["report", "--db", str(tmp_path / "old.db"), "--out", str(tmp_path / "out"), "--project-dir", str(ROOT)]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    expected = f"has schema version {latest - 1}, this code reads version {latest}: start the service once"
    assert expected in capsys.readouterr().out


def test_a_feature_never_logged_leaves_its_figures_empty_not_broken(profile: dict[str, Any], tmp_path: Path) -> None:
    houses = synthetic_housing(330, seed=9).assign(total_bedrooms=np.nan)  # clients that never send it
    database = LogDatabase("sqlite", tmp_path, None)
    fill(database, time.time() - 3600, houses, bounds=False)
    report = build_report(LogReader(database.store()), profile, options())
    database.close()
    bedrooms = report["inputs"]["features"]["total_bedrooms"]
    assert (bedrooms["log_median"], bedrooms["log_deciles"], bedrooms["p_value"]) == (None, None, None)
    assert bedrooms["drifted"] is True  # PSI: every logged house falls outside the training bins
    written = write_report(report, tmp_path / "out")
    json.loads((tmp_path / "out" / "report.json").read_text())
    assert tmp_path / "out" / "figures" / "inputs.png" in written
