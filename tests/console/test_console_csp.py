"""The console's Content-Security-Policy in real Chromium: every page works under it (no violation
reported while a dialog opens and a form submits), and no other page can frame the console."""

from __future__ import annotations

from typing import Any

import httpx


def test_pages_run_under_the_policy_and_cannot_be_framed(page: Any, server: Any, admin: httpx.Client) -> None:
    assert admin.post("/v1/flags", json={"key": "csp", "variants": ["a", "b"]}).status_code == 201
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(server.url + "/console/login")
    page.fill("#key", server.admin_key)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()
    for path in ("/console/", "/console/new", "/console/flags/csp"):
        page.goto(server.url + path)
        page.wait_for_load_state()
    page.click("[data-open]")  # console.js (a script of its own origin) opens a confirmation dialog
    assert page.locator("dialog[open]").count() == 1
    violations = [m for m in messages if "Content Security Policy" in m]
    assert violations == [], violations

    # Another origin framing the console gets nothing (frame-ancestors 'none').
    messages.clear()
    page.set_content(f'<iframe id="f" src="{server.url}/console/login"></iframe>')
    page.wait_for_timeout(500)
    frame = page.frame_locator("#f")
    assert frame.locator("#key").count() == 0
    assert any("frame-ancestors" in m for m in messages), messages
