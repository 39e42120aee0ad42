"""Issue 11 in the console, in a real browser: variants are drawn in the colour they are named after (the
README's "green" is green), the reward axis speaks the objective's unit (rates in percent, a continuous
mean as a number), and a flag whose conversions outnumber its exposures says so."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from banditflags_server.console.palette import NAMED


def login(page: Any, server: Any) -> None:
    page.goto(server.url + "/console/")
    page.fill("#key", server.admin_key)
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()


def events(
    sdk: httpx.Client, key: str, exposures: list[int], rewards: list[tuple[int, float, float]]
) -> None:
    body = {
        "batch_id": uuid.uuid4().hex,
        "exposures": [{"flag": key, "version": 1, "arm": a, "count": n} for a, n in enumerate(exposures)],
        "rewards": [
            {"flag": key, "version": 1, "arm": a, "count": c, "sum": s, "sum_sq": ss}
            for a, (c, s, ss) in enumerate(rewards)
            if c
        ],
    }
    assert sdk.post("/v1/events", json=body).status_code == 202


def swatches(page: Any) -> dict[str, str]:
    """Variant -> the fill of its swatch in the variants table."""
    out = {}
    for row in page.locator("[data-testid=variants] tbody tr").all():
        out[row.get_attribute("data-variant")] = row.locator("svg.swatch rect").get_attribute("fill")
    return out


def ticks(page: Any, title: str) -> list[str]:
    chart = page.locator(f"svg.chart[aria-label='{title}']")
    return [t.text_content() or "" for t in chart.locator("text.tick").all()]


def test_colours_axis_and_the_clamp_warning(page: Any, server: Any, admin: httpx.Client, shot: Any) -> None:
    binary = {"key": "button", "variants": ["control", "green", "blue", "orange"], "control": "control"}
    assert admin.post("/v1/flags", json=binary).status_code == 201
    revenue = {"key": "basket", "variants": ["a", "b"], "objective": {"reward": "continuous"}}
    assert admin.post("/v1/flags", json=revenue).status_code == 201
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.sdk_key}"}) as sdk:
        # "orange" converts 120 times in 100 exposures: conversions repeated without decision ids.
        events(sdk, "button", [100, 100, 100, 100], [(4, 4, 4), (7, 7, 7), (5, 5, 5), (120, 120, 120)])
        events(sdk, "basket", [100, 100], [(100, 80.0, 70.0), (100, 75.0, 60.0)])  # means 0.8 and 0.75
    login(page, server)

    page.goto(server.url + "/console/flags/button")
    fills = swatches(page)
    assert fills["green"] == NAMED["green"][1] and fills["blue"] == NAMED["blue"][1]
    assert fills["orange"] == NAMED["orange"][1]
    assert fills["control"] not in {NAMED[c][1] for c in ("green", "blue", "orange")}
    # The charts use the same colours as the table: the allocation's areas are titled by variant.
    chart = page.locator("svg.chart[aria-label='allocation over time']")
    for variant in ("green", "blue", "orange", "control"):
        polygon = chart.locator("polygon", has=page.locator(f"title:text-is('{variant}')"))
        assert polygon.get_attribute("fill") == fills[variant], variant
    labels = ticks(page, "reward estimate over time")
    values = [x for x in labels if ":" not in x]  # the time axis has clock times
    assert values and all(x.endswith("%") for x in values), labels
    assert max(float(x.rstrip("%")) for x in values) <= 100.0
    warning = page.locator("[data-testid=warning]")
    assert warning.count() == 1 and warning.get_attribute("data-variant") == "orange"
    assert "More conversions than exposures" in warning.inner_text() and "20" in warning.inner_text()
    assert page.locator("tr[data-variant=orange]").inner_text().split("\t")[4].strip() == "1"  # mean, clamped
    shot(page, "11-colours-and-clamp")

    page.goto(server.url + "/console/flags/basket")
    labels = [x for x in ticks(page, "reward estimate over time") if ":" not in x]
    assert labels and not any(x.endswith("%") for x in labels), labels
    assert "0.80" in labels or "0.8" in labels
    assert page.locator("[data-testid=warning]").count() == 0
    shot(page, "12-continuous-axis")
