"""The live HTML dashboard in headless Chromium (Playwright driving Debian's chromium)."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from devtools.browser import chromium
from housing.log.queries import short_id
from service.api_models import EXAMPLE_HOUSE
from tests.service.server import Server
from tests.workspace import ROOT

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "reports" / "figures" / "dashboard.png"


def test_dashboard_shows_the_api_numbers_and_refreshes(scraped: tuple[Server, str]) -> None:
    server, _ = scraped
    api = httpx.Client(base_url=server.url, timeout=30)
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.url}/dashboard")
        # Locators, not JS conditions: the page's Content-Security-Policy (no eval) stays in force.
        expect(page.locator("#updated")).to_have_text(re.compile("^updated"), timeout=30_000)

        model = api.get("/model").json()
        assert page.text_content("#model") == f"housing-price-model v{model['model_version']}"
        drift = api.get("/drift").json()
        expected = f"drift in {', '.join(drift['drifted_features'])}" if drift["drift_detected"] else "no drift"
        assert page.text_content("#drift-status") == expected
        assert page.locator("#drift tr").count() == len(drift["features"]) + 1
        accuracy = api.get("/accuracy").json()["accuracy"]
        cells = page.locator("#accuracy tr").nth(1).locator("td").all_text_contents()
        assert cells[:2] == [f"v{accuracy[0]['model_version']}", str(accuracy[0]["n"])]
        coverage = f"{accuracy[0]['coverage'] * 100:.1f}% of {accuracy[0]['n_interval']}"
        assert cells[4] == coverage
        assert "interval coverage (90.0% promised)" in page.locator("#accuracy tr").first.inner_text()
        hourly = api.get("/accuracy", params={"bucket_s": 3600}).json()["accuracy"]
        assert page.locator("#accuracy-hourly tr").count() == min(len(hourly), 12) + 1
        stats = api.get("/stats").json()
        assert page.text_content("#rate-hour") == f"{stats['per_hour'][-1]['requests']} this hour"
        assert page.locator("#recent tr").count() == len(stats["recent"]) + 1
        assert page.text_content("#shadow-status") == "no challenger (housing shadow start VERSION)"
        # The explanation charts: the top reasons of the latest predictions, and the inputs by global importance.
        recent = api.get("/explain/recent", params={"limit": 8}).json()["predictions"]
        assert page.locator("#reasons-chart rect").count() == sum(len(p["top"]) for p in recent) > 0
        assert recent[0]["request_id"] in page.locator("#reasons-chart text.label").first.text_content()
        importance = api.get("/explain/importance").json()["mean_abs_contribution_usd"]
        ranked = sorted(importance, key=lambda name: -importance[name])
        assert page.locator("#importance-chart text.label").all_text_contents() == ranked
        widths = [
            float(w)
            for w in page.locator("#importance-chart rect").evaluate_all(
                "bars => bars.map(b => b.getAttribute('width'))"
            )
        ]
        assert widths == sorted(widths, reverse=True)
        assert widths[0] > 0
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # Live: a new prediction appears at the top of the table without a reload.
        new_id = api.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "dashboard-live-check"}).json()
        newest = page.locator("#recent tr:nth-child(2) td:nth-child(2)")
        expect(newest).to_have_text(short_id(new_id["request_id"]), timeout=30_000)
    assert not errors, errors
    assert SCREENSHOT.stat().st_size > 20_000
