"""Issue 12 in a real browser (Playwright + Debian's Chromium) against the real server and a running SDK:
build a rule with two clauses in the targeting editor, see the server's error next to a bad value,
fix it, add a second rule and move it up, save, and watch ``/v1/config`` and the SDK serve both rules
in that order; then create a segment and have a rule name it. Under the console's CSP (no violation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.console.test_console_browser import login, poll

import banditflags


@pytest.fixture
def sdk(server: Any) -> Iterator[banditflags.Client]:
    client = banditflags.Client(server.url, server.sdk_key, refresh_interval=3600.0, flush_interval=0.5)
    assert client.wait_until_ready(10.0)
    yield client
    client.close(timeout=2.0)


def press(page: Any, action: str) -> None:
    """Click the editor's submit button ``action`` and wait for the page it answers."""
    with page.expect_navigation():
        page.click(f"button[name=action][value='{action}'] >> nth=0")


def test_rules_built_refused_reordered_and_served(
    page: Any, server: Any, admin: httpx.Client, sdk: banditflags.Client, shot: Any
) -> None:
    assert admin.post("/v1/flags", json={"key": "shop", "variants": ["a", "b", "c"]}).status_code == 201
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    login(page, server, server.admin_key)
    page.goto(server.url + "/console/flags/shop")
    assert page.locator("[data-testid=no-rules]").count() == 1
    page.click("#targeting-edit > summary")

    # A rule with two clauses, the second with a value gte cannot read.
    press(page, "rules:add")
    assert page.locator("[data-testid=unsaved]").count() == 1
    page.fill("[name=rules-0-id]", "adults")
    # console.js shows only the field of what the rule serves (both without the script).
    assert not page.is_visible("[name=rules-0-weights]") and page.is_visible("[name=rules-0-variant]")
    page.select_option("[name=rules-0-serve]", "weights")
    assert page.is_visible("[name=rules-0-weights]") and not page.is_visible("[name=rules-0-variant]")
    page.select_option("[name=rules-0-serve]", "variant")
    page.fill("[name=rules-0-clauses-0-attribute]", "country")
    page.fill("[name=rules-0-clauses-0-values]", "us\nca")
    press(page, "rules-0-clauses:add")
    assert page.input_value("[name=rules-0-clauses-0-values]") == "us\nca"  # kept across the edit
    page.fill("[name=rules-0-clauses-1-attribute]", "age")
    page.select_option("[name=rules-0-clauses-1-op]", "gte")
    page.fill("[name=rules-0-clauses-1-values]", "eighteen")
    page.select_option("[name=rules-0-variant]", "b")
    press(page, "save")
    error = page.inner_text("[data-error-for=rules-0-clauses-1-values]")
    assert "must be finite numbers" in error, error
    shot(page, "12-rule-error")
    assert admin.get("/v1/flags/shop").json()["rules"] == []

    # Fixed, plus a second rule moved above it.
    page.fill("[name=rules-0-clauses-1-values]", "18")
    press(page, "rules:add")
    page.fill("[name=rules-1-id]", "staff")
    page.fill("[name=rules-1-clauses-0-attribute]", "email")
    page.select_option("[name=rules-1-clauses-0-op]", "ends_with")
    page.fill("[name=rules-1-clauses-0-values]", "@corp.test")
    page.select_option("[name=rules-1-variant]", "c")
    press(page, "rules:up-1")
    assert page.input_value("[name=rules-0-id]") == "staff"
    assert page.input_value("[name=rules-1-clauses-1-values]") == "18"
    page.fill("#tg-reason", "staff first")
    press(page, "save")
    page.wait_for_selector("[data-testid=done]")
    order = page.locator("[data-testid=rules] li.rule").evaluate_all("els => els.map(e => e.dataset.rule)")
    assert order == ["staff", "adults"]
    assert "age gte 18" in page.inner_text("li.rule[data-rule=adults]")
    shot(page, "13-rules-saved")

    # Served: the config carries both rules in order, and the SDK evaluates them.
    served = next(
        f
        for f in httpx.get(server.url + "/v1/config", headers=_sdk(server)).json()["flags"]
        if f["key"] == "shop"
    )
    assert [r["id"] for r in served["rules"]] == ["staff", "adults"]
    adult = {"country": "us", "age": 30, "email": "x@corp.test"}
    assert poll(lambda: sdk.variant("shop", "u1", attributes=adult) == "c", 5.0)
    assert sdk.variant("shop", "u1", attributes={**adult, "email": "x@home.test"}) == "b"
    assert sdk.decide("shop", "u1", attributes={**adult, "email": "x@home.test"}).rule == "adults"
    audit = admin.get("/v1/flags/shop/audit").json()["entries"][0]
    assert audit["actor"] == "env-admin" and audit["reason"] == "staff first"

    # A segment made in the console, named by a rule.
    page.click("nav a:has-text('Segments')")
    page.click("a:has-text('New segment')")
    page.fill("#key", "vips")
    page.fill("#included", "u7")
    page.click("button[name=action][value='clauses:remove-0']")
    page.wait_for_selector("[data-testid=unsaved]")
    with page.expect_navigation():
        page.press("#key", "Enter")  # the form's default button saves
    page.wait_for_selector("[data-testid=done]")
    shot(page, "14-segment")
    page.goto(server.url + "/console/flags/shop")
    page.click("#targeting-edit > summary")
    page.select_option("[name=rules-0-clauses-0-op]", "in_segment")
    page.fill("[name=rules-0-clauses-0-attribute]", "")
    page.fill("[name=rules-0-clauses-0-values]", "vips")
    press(page, "save")
    page.wait_for_selector("[data-testid=done]")
    assert "in segment vips" in page.inner_text("li.rule[data-rule=staff]")
    assert poll(lambda: sdk.variant("shop", "u7", attributes={}) == "c", 5.0)
    page.click("#targeting-edit > summary")
    shot(page, "15-rules-editor")
    violations = [m for m in messages if "Content Security Policy" in m]
    assert violations == [], violations


def _sdk(server: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.sdk_key}"}
