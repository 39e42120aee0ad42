"""The console in a real browser (Playwright + Debian's Chromium) against the real server, with a
running SDK client: log in, create a flag, see it listed, throttle it, kill it and watch the client
answer the control variant, un-kill it. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import banditflags


def poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """True as soon as ``predicate`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def login(page: Any, server: Any, key: str) -> None:
    page.goto(server.url + "/console/")
    page.fill("#key", key)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()


@pytest.fixture
def sdk(server: Any) -> Iterator[banditflags.Client]:
    # Polling would take an hour: what the client learns, it learns from the stream.
    client = banditflags.Client(server.url, server.sdk_key, refresh_interval=3600.0, flush_interval=0.5)
    assert client.wait_until_ready(10.0)
    yield client
    client.close(timeout=2.0)


def test_operator_flow(
    page: Any, server: Any, admin: httpx.Client, sdk: banditflags.Client, shot: Any
) -> None:
    # Unauthenticated: the login page, which remembers where we were going.
    page.goto(server.url + "/console/flags/checkout-button")
    assert re.search(r"/console/login\?next=", page.url)
    shot(page, "00-login")
    page.fill("#key", server.admin_key)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()
    assert page.url.endswith("/console/flags/checkout-button")  # not there yet: the console's 404 page
    assert "There is no flag" in page.inner_text("[data-testid=error]")
    page.goto(server.url + "/console/")
    assert page.inner_text("[data-testid=who]") == "env-admin"
    assert "No flags yet" in page.content()

    # Create: first with mistakes, shown next to their fields; nothing is created.
    page.click("a:has-text('New flag') >> nth=0")
    page.fill("#key", "Checkout Button")
    page.fill("#variants", "blue = #00f\nblue")
    page.fill("#exploration", "lots")
    page.click("button:has-text('Create flag')")
    assert "must match" in page.inner_text("[data-error-for=key]")
    assert "line 2" in page.inner_text("[data-error-for=variants]")
    assert "number" in page.inner_text("[data-error-for=exploration]")
    assert page.input_value("#variants") == "blue = #00f\nblue"  # what was typed is kept
    shot(page, "01-create-errors")
    assert admin.get("/v1/flags").json()["flags"] == []
    page.fill("#key", "checkout-button")
    page.fill("#description", "Colour of the checkout button")
    page.fill("#variants", "blue = #00f\ngreen = #0f0\norange = #f80")
    page.fill("#control", "blue")
    page.fill("#exploration", "100")
    page.fill("#reason", "launch")
    page.click("button:has-text('Create flag')")
    page.wait_for_selector("[data-testid=done]")
    assert page.inner_text("[data-testid=flag-key]") == "checkout-button"

    # Listed.
    page.click("nav >> text=Flags")
    row = page.locator("tr[data-flag='checkout-button']")
    assert row.count() == 1 and "running" in row.inner_text()
    shot(page, "02-flags-list")

    # The SDK got the new flag through the stream.
    assert poll(lambda: sdk.variant("checkout-button", "u0") is not None, 5.0)

    # Throttle to 40%: the served split moves toward the control.
    page.click("a:has-text('checkout-button')")
    page.fill("#exploration", "40")
    page.fill("#exp-reason", "halve the exposure while we watch")
    page.click("button:has-text('Set exploration')")
    page.wait_for_selector("[data-testid=done]")
    flag = admin.get("/v1/flags/checkout-button").json()
    assert flag["exploration"] == 0.4 and flag["weights"][0] > 0.5
    shot(page, "03-throttled")

    # A unit that is not on the control arm now.
    unit = next(f"user-{i}" for i in range(10_000) if sdk.variant("checkout-button", f"user-{i}") != "blue")
    before = sdk.variant("checkout-button", unit)

    # Kill, after a confirmation that says what will happen.
    page.click("button:has-text('Kill…')")
    dialog = page.locator("#dlg-kill")
    assert dialog.is_visible()
    text = dialog.inner_text()
    assert "serves the control variant “blue” to every unit" in text and "un-killing returns" in text
    dialog.locator("input[name=reason]").fill("checkout errors up 4x")
    shot(page, "04-kill-confirmation", full_page=False)
    dialog.locator("button:has-text('Kill checkout-button')").click()
    page.wait_for_selector("[data-testid=killed-banner]")
    # The server has committed the kill (the page says so): the running client obeys within a second.
    assert poll(lambda: sdk.variant("checkout-button", unit) == "blue", 1.0), "the SDK did not obey the kill"
    assert sdk.decide("checkout-button", unit).reason.value == "disabled"
    shot(page, "05-killed")
    audit = page.locator("[data-testid=audit]").inner_text()
    assert "kill" in audit and "env-admin" in audit and "checkout errors up 4x" in audit
    assert server.admin_key not in page.content()
    page.goto(server.url + "/console/")
    killed_row = page.locator("tr[data-flag='checkout-button']").inner_text()
    assert "killed" in killed_row and "everyone → blue" in killed_row
    shot(page, "06-flags-list-killed")
    page.goto(server.url + "/console/flags/checkout-button")

    # Un-kill: every unit returns to the arm it had.
    page.click("button:has-text('Un-kill…')")
    assert "returns to the variant it had" in page.locator("#dlg-unkill").inner_text()
    page.locator("#dlg-unkill button:has-text('Un-kill checkout-button')").click()
    page.wait_for_selector("[data-testid=done]")
    assert page.inner_text("[data-testid=state]") == "running"
    assert poll(lambda: sdk.variant("checkout-button", unit) == before, 5.0)
    shot(page, "07-unkilled")

    # Every change is in the audit log with the key's name.
    entries = admin.get("/v1/flags/checkout-button/audit").json()["entries"]
    assert [e["action"] for e in reversed(entries)] == ["create", "throttle", "kill", "unkill"]
    assert {e["actor"] for e in entries} == {"env-admin"}

    # Sign out: the session is gone, the console asks for a key again.
    page.click("button:has-text('Sign out')")
    page.wait_for_load_state()
    assert "/console/login" in page.url
    page.goto(server.url + "/console/")
    assert "/console/login" in page.url


def test_sdk_key_and_unknown_key_cannot_log_in(page: Any, server: Any, shot: Any) -> None:
    login(page, server, server.sdk_key)
    assert "/console/login" in page.url
    assert "An sdk key cannot sign in" in page.inner_text("[data-testid=login-error]")
    shot(page, "08-sdk-key-refused")
    login(page, server, "bf_admin_not-a-real-key")
    assert "Unknown key" in page.inner_text("[data-testid=login-error]")
    assert not [c for c in page.context.cookies() if c["name"] == "bf_console"]


def test_changes_without_the_csrf_token_are_refused(page: Any, server: Any, admin: httpx.Client) -> None:
    assert admin.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
    login(page, server, server.admin_key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "bf_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    # The browser's own cookie jar, without the form's token: refused, nothing changes.
    url = server.url + "/console/flags/f/state"
    for form in ({"state": "killed"}, {"state": "killed", "csrf": "forged"}):
        resp = page.request.post(url, form=form, max_redirects=0)
        assert resp.status == 403 and "Nothing was changed" in resp.text()
    assert admin.get("/v1/flags/f").json()["state"] == "running"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: invisible to scripts
    # The same request with the page's token goes through.
    page.goto(server.url + "/console/flags/f")
    token = page.locator("#dlg-kill input[name=csrf]").input_value()
    resp = page.request.post(url, form={"state": "killed", "csrf": token}, max_redirects=0)
    assert resp.status == 303
    assert admin.get("/v1/flags/f").json()["state"] == "killed"
