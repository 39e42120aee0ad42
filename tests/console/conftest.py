"""Fixtures of the console tests: Playwright driving Debian's Chromium, and the screenshots folder.

Playwright's own browser download is not used (nor reachable here). ``./scripts/test --install-browser``
(or ``BANDITFLAGS_INSTALL_BROWSER=1``, which ``.ci/run`` sets) installs Debian's ``chromium`` when it is
missing; without it a machine lacking the browser skips these tests, with the reason. Under ``CI=true``
they fail instead: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run installs it: BANDITFLAGS_INSTALL_BROWSER=1 ./scripts/test)")
    pytest.skip(f"{reason}: the console's browser tests need it (./scripts/test --install-browser, as root)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (dev extra)")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page, 1366x900."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shot() -> Any:
    """``shot(page, name)`` saves a full-page screenshot to ``test-artifacts/console-<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture
def console(server: Any) -> Iterator[httpx.Client]:
    """A console client signed in to ``server`` with its admin key (a browser without JavaScript)."""
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    with contextlib.closing(client):
        page = client.get("/console/login")
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token is not None
        resp = client.post("/console/login", data={"key": server.admin_key, "token": token.group(1)})
        assert resp.status_code == 303
        yield client
