"""`make soak` in short: two minutes of steady mixed traffic against a real `bentoml serve` leave nothing growing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load_tests.soak import Sample, capacity, run, verdict, write
from tests.service.conftest import FEEDBACK
from tests.service.server import start_server

pytestmark = pytest.mark.integration


@pytest.mark.timing
def test_two_minutes_of_steady_traffic_leave_nothing_growing(tmp_path: Path, workspace) -> None:  # type: ignore[no-untyped-def]
    server = start_server(tmp_path / "server", {"HOUSING_MAX_BATCH_SIZE": "10000"})
    try:
        soak = run(server.url, server.process.pid, 2.0, 30, capacity(server.url, tmp_path), tmp_path, FEEDBACK)
    finally:
        server.stop()
    write(soak, tmp_path / "report")
    assert soak.problems == [], soak.samples
    assert len(soak.samples) == 4
    assert all(sample.requests_per_s > 0.3 * soak.target_rps for sample in soak.samples), soak.samples
    assert soak.feedback >= 100
    assert soak.explained >= 100
    report = json.loads((tmp_path / "report" / "soak.json").read_text())
    assert report["samples"][0]["rss_mb"] > 0
    assert (tmp_path / "report" / "soak.png").stat().st_size > 10_000


def sample(rss: float, files: int, p99: float) -> Sample:
    return Sample(t_s=30.0, rss_mb=rss, open_files=files, threads=40, requests_per_s=400.0, p50_ms=2.0,
                  p99_ms=p99, errors=0, refused=0)  # fmt: skip


def test_the_verdict_names_what_grew_after_the_warm_up() -> None:
    assert verdict([sample(500, 60, 10), sample(700, 60, 10), sample(540, 65, 14)]) == []
    assert verdict([sample(500, 60, 10), sample(560, 60, 10)]) == ["memory grew from 500 to 560 MB after the warm-up"]
    assert verdict([sample(500, 60, 10), sample(500, 70, 16)]) == [
        "open files grew from 60 to 70 after the warm-up",
        "p99 drifted from 10.0 to 16.0 ms after the warm-up",
    ]
