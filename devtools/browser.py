"""Headless Chromium for the scripts and tests that render pages: Debian's browser, driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

# The system's Chromium (Debian's package: `playwright install` needs a download site this machine cannot
# reach); without one, Playwright's own build (`make tools` installs it where the system has none).
CHROMIUM = shutil.which("chromium")
# Chromium must not reach for the network this machine does not have.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
