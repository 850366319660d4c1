"""The figures of an insights report recomputed with plain SQL over the log, to hold the report to;
and `housing report` run in process.

Independent of operations.insights: aggregates are the database's own (COUNT, SUM,
AVG, CASE), percentiles are read off the sorted latencies by nearest rank, and
only the PSI comes from housing.drift_stats (the project's one definition of it),
fed with rows these queries select.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from housing.columns import CATEGORICAL_COLUMN, FEATURE_COLUMNS
from housing.drift_stats import drift_report
from housing.log.store import LogStore
from housing.slices import band_names
from operations.cli import main

_JOIN = "FROM feedback f JOIN predictions p ON p.request_id = f.request_id AND p.idx = f.idx"
_SLICE = f"""
    SELECT {{key}} AS slice, COUNT(*), AVG(ABS(p.price_usd - f.actual_price_usd)),
           AVG((p.price_usd - f.actual_price_usd) * (p.price_usd - f.actual_price_usd)),
           AVG(p.price_usd - f.actual_price_usd), COUNT(p.lower_usd),
           SUM(CASE WHEN p.lower_usd <= f.actual_price_usd AND f.actual_price_usd <= p.upper_usd THEN 1 ELSE 0 END)
    {_JOIN} WHERE f.authenticated = 1 AND p.ts >= ? GROUP BY 1
"""


def housing_report(*args: str) -> dict[str, Any]:
    """Run `housing report` in process (``--out`` among ``args``); its report.json."""
    with pytest.raises(SystemExit) as exit_:
        main(["report", *args])
    assert exit_.value.code == 0
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "report.json").read_text())


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def band_case(edges: Sequence[float], labels: Sequence[str]) -> str:
    """The income band of ``p.median_income`` as a SQL CASE: bands closed on the right, the first on both sides."""
    whens = " ".join(
        f"WHEN p.median_income <= {high!r} THEN '{label}'" for high, label in zip(edges[1:], labels[:-1], strict=True)
    )
    return f"CASE WHEN p.median_income < {edges[0]!r} THEN NULL {whens} ELSE '{labels[-1]}' END"


def assert_report_matches_sql(report: dict[str, Any], store: LogStore, edges: Sequence[float]) -> None:
    """Every number of ``report`` equals the same figure computed by SQL over ``store`` (income bands ``edges``)."""
    labels = band_names(edges)
    since = report["period"]["since"]
    sql = "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM predictions WHERE ts >= ?"
    houses, requests = store.query(sql, [since])[0]
    assert report["totals"] == {"houses": houses, "requests": requests}

    traffic = report["traffic"]
    width = traffic["bucket_s"]
    sql = "SELECT slot * 60 / ? AS bucket, SUM(requests), SUM(houses) FROM traffic WHERE slot >= ? GROUP BY 1"
    per_bucket = {int(b) * width: (int(r), int(h)) for b, r, h in store.query(sql, [width, int(since // 60)])}
    assert {b["start"]: (b["requests"], b["houses"]) for b in traffic["buckets"] if b["requests"]} == per_bucket
    assert traffic["requests"] == sum(r for r, _ in per_bucket.values())
    assert traffic["houses"] == sum(h for _, h in per_bucket.values())
    busiest = store.query(
        "SELECT slot * 60 / ? AS bucket FROM traffic WHERE slot >= ? GROUP BY 1 "
        "ORDER BY SUM(houses) DESC, SUM(requests) DESC, 1 LIMIT 1",
        [width, int(since // 60)],
    )
    assert traffic["peak"]["start"] == busiest[0][0] * width

    latencies = store.query(
        "SELECT endpoint, request_id, MAX(latency_ms) FROM predictions WHERE ts >= ? GROUP BY endpoint, request_id",
        [since],
    )
    groups = {"overall": [row[2] for row in latencies]}
    for endpoint in {row[0] for row in latencies}:
        groups[endpoint] = [row[2] for row in latencies if row[0] == endpoint]
    latency = report["latency"]
    for name, values in groups.items():
        figures = latency["overall"] if name == "overall" else latency["by_endpoint"][name]
        assert figures["requests"] == len(values)
        for q in (50, 95, 99):
            assert figures[f"p{q}_ms"] == nearest_rank(values, q)
        assert figures["mean_ms"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert set(latency["by_endpoint"]) == set(groups) - {"overall"}

    feedback = report["feedback"]
    keys = [("'all'", None), (f"p.{CATEGORICAL_COLUMN}", CATEGORICAL_COLUMN), (band_case(edges, labels), "income_band")]
    for key, name in keys:
        slices = {row[0]: row[1:] for row in store.query(_SLICE.format(key=key), [since])}
        figures = {"all": feedback["overall"]} if name is None else feedback["by"][name]
        assert set(figures) == set(slices)
        for label, (n, mae, mse, bias, bounded, covered) in slices.items():
            assert figures[label]["n"] == n
            assert figures[label]["mae_usd"] == pytest.approx(mae, rel=1e-9)
            assert figures[label]["rmse_usd"] == pytest.approx(math.sqrt(mse), rel=1e-9)
            assert figures[label]["bias_usd"] == pytest.approx(bias, rel=1e-9, abs=1e-6)
            assert figures[label]["with_bounds"] == bounded
            assert figures[label]["coverage"] == (pytest.approx(covered / bounded, rel=1e-12) if bounded else None)
    untrusted = store.query(f"SELECT COUNT(*) {_JOIN} WHERE f.authenticated = 0 AND p.ts >= ?", [since])[0][0]
    assert feedback["untrusted_left_out"] == untrusted


def assert_drift_matches_sql(report: dict[str, Any], store: LogStore, profile: dict[str, Any]) -> None:
    """The PSI of every scored window equals drift_stats' over the rows SQL selects for that window."""
    inputs = report["inputs"]
    columns = ", ".join(FEATURE_COLUMNS)
    rows = store.query(f"SELECT {columns} FROM predictions WHERE ts >= ? ORDER BY id", [report["period"]["since"]])  # noqa: S608
    thresholds = inputs["thresholds"]["psi"], inputs["thresholds"]["p_value"]
    expected = drift_report(profile, _as_columns(rows), *thresholds)
    assert {name: f["psi"] for name, f in inputs["features"].items()} == {
        name: f["psi"] for name, f in expected["features"].items()
    }
    assert inputs["drifted_features"] == expected["drifted_features"]
    windows = report["drift_over_time"]["windows"]
    for i, window in enumerate(windows):
        upper = "<=" if i == len(windows) - 1 else "<"
        sql = f"SELECT {columns} FROM predictions WHERE ts >= ? AND ts {upper} ? ORDER BY id"  # noqa: S608
        selected = store.query(sql, [window["start"], window["end"]])
        assert window["rows"] == len(selected)
        if "psi" in window:
            scores = drift_report(profile, _as_columns(selected), *thresholds)
            assert window["psi"] == {name: f["psi"] for name, f in scores["features"].items()}


def _as_columns(rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {name: [row[i] for row in rows] for i, name in enumerate(FEATURE_COLUMNS)}
