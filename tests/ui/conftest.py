"""A real browser for the view's tests: Debian's Chromium driven by Playwright for Python.

Playwright's own browser download is not needed (nor reachable here): it drives the system
Chromium through `executable_path`. Tests that use the `browser` fixture are marked `browser`
automatically; skip them with `-m "not browser"`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("SIMIANKUBE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "npm: rebuilds the web bundle with npm ci (needs the npm registry or its cache)."
    )
    config.addinivalue_line(
        "markers", 'browser: drives a real headless Chromium (Debian package chromium). Skip with -m "not browser".'
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, headless; fails (not skips) when it is missing: scripts/bootstrap.sh system installs it.

    Module scope: Playwright's sync API keeps an event loop running while it is open, which the
    asyncio tests of other modules must not find."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/bootstrap.sh system (Debian package chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
