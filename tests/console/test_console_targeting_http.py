"""A flag's targets and rules in the console over plain HTTP (issue 12), without JavaScript: the editing
buttons change only the form, a refused save shows the server's errors next to their fields and
changes nothing, a save is served and audited, a stale form and a missing CSRF token are refused, and
the page shows each rule with what it serves (a bandit rule with its own weights)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from tests.console.helpers import error_for, fields


def post(console: httpx.Client, page: str, action: str, **changes: str) -> httpx.Response:
    data = {**fields(page), **changes, "action": action}
    return console.post("/console/flags/shop/targeting", data=data)


def test_rules_edited_refused_saved_and_audited(console: httpx.Client, admin: httpx.Client, sdk: Any) -> None:
    assert admin.post("/v1/flags", json={"key": "shop", "variants": ["a", "b", "c"]}).status_code == 201
    page = console.get("/console/flags/shop").text
    assert 'data-testid="no-rules"' in page

    # "Add rule" and "Add clause" only change the form (200, unsaved); nothing is stored.
    resp = post(console, page, "rules:add")
    assert resp.status_code == 200 and 'data-testid="unsaved"' in resp.text
    assert fields(resp.text)["rules-0-id"] == "rule-1"
    resp = post(console, resp.text, "rules-0-clauses:add")
    assert "rules-0-clauses-1-op" in fields(resp.text)
    assert admin.get("/v1/flags/shop").json()["rules"] == []

    # A bad value: the server's error next to its field; nothing changes, nothing is audited.
    audit_before = admin.get("/v1/flags/shop/audit").json()
    two_clauses = {
        "rules-0-id": "adults",
        "rules-0-clauses-0-attribute": "country",
        "rules-0-clauses-0-op": "in",
        "rules-0-clauses-0-values": "us\nca",
        "rules-0-clauses-1-attribute": "age",
        "rules-0-clauses-1-op": "gte",
        "rules-0-clauses-1-values": "eighteen",
        "rules-0-serve": "variant",
        "rules-0-variant": "b",
    }
    resp = post(console, resp.text, "save", **two_clauses)
    assert resp.status_code == 422 and 'data-testid="targeting-errors"' in resp.text
    assert error_for(resp.text, "rules-0-clauses-1-values").startswith("value 1: must be finite numbers")
    assert fields(resp.text)["rules-0-clauses-1-values"] == "eighteen"  # what was typed is kept
    assert admin.get("/v1/flags/shop").json()["rules"] == []
    assert admin.get("/v1/flags/shop/audit").json() == audit_before

    # Fixed: saved, served to SDKs, audited as the session's key with the reason.
    fixed = post(console, resp.text, "save", **{"rules-0-clauses-1-values": "18", "reason": "adults first"})
    assert fixed.status_code == 303 and fixed.headers["location"].endswith("?done=targeting#targeting")
    rule = {
        "id": "adults",
        "clauses": [
            {"attribute": "country", "op": "in", "values": ["us", "ca"], "negate": False},
            {"attribute": "age", "op": "gte", "values": [18], "negate": False},
        ],
        "serve": {"variant": "b"},
    }
    assert admin.get("/v1/flags/shop").json()["rules"] == [rule]
    served = next(f for f in sdk.get("/v1/config").json()["flags"] if f["key"] == "shop")
    assert served["rules"] == [rule]
    entry = admin.get("/v1/flags/shop/audit").json()["entries"][0]
    assert entry["actor"] == "env-admin" and entry["reason"] == "adults first"
    assert entry["before"] == {"rules": []} and entry["after"] == {"rules": [rule]}
    page = console.get("/console/flags/shop").text
    assert "country in us, ca" in page and "age gte 18" in page and "variant b" in page

    # A second rule (a split, a target), moved up: the form shows it first; saved in that order.
    resp = post(console, page, "rules:add")
    resp = post(
        console,
        resp.text,
        "rules:up-1",
        **{
            "rules-1-id": "beta",
            "rules-1-clauses-0-attribute": "plan",
            "rules-1-clauses-0-op": "exists",
            "rules-1-serve": "weights",
            "rules-1-weights": "1, 1, 0",
        },
    )
    assert fields(resp.text)["rules-0-id"] == "beta" and fields(resp.text)["rules-1-id"] == "adults"
    bad = post(console, resp.text, "save", **{"rules-0-weights": "1, x, 0"})
    assert bad.status_code == 422 and error_for(bad.text, "rules-0-weights") == "weight 2: must be a number"
    resp = post(console, resp.text, "targets:add")
    resp = post(console, resp.text, "save", **{"targets-0-variant": "c", "targets-0-units": "alice\nbob"})
    assert resp.status_code == 303
    flag = admin.get("/v1/flags/shop").json()
    assert [r["id"] for r in flag["rules"]] == ["beta", "adults"]
    assert flag["rules"][0]["serve"] == {"weights": [1.0, 1.0, 0.0]}
    assert flag["targets"] == [{"variant": "c", "units": ["alice", "bob"]}]

    page = console.get("/console/flags/shop").text
    audit = page[page.index('data-testid="audit"') :]
    assert "whole change" in audit and '"id": "beta"' in audit  # the rules as saved, in full

    # The form as loaded, saved unchanged, is no change: no audit entry, the same lists.
    entries = len(admin.get("/v1/flags/shop/audit").json()["entries"])
    assert post(console, console.get("/console/flags/shop").text, "save").status_code == 303
    assert len(admin.get("/v1/flags/shop/audit").json()["entries"]) == entries
    after = admin.get("/v1/flags/shop").json()
    assert (after["rules"], after["targets"]) == (flag["rules"], flag["targets"])


def test_stale_forms_csrf_segments_and_bandit_rules(
    console: httpx.Client, admin: httpx.Client, sdk: httpx.Client
) -> None:
    assert admin.post("/v1/flags", json={"key": "shop", "variants": ["a", "b"]}).status_code == 201
    page = console.get("/console/flags/shop").text
    resp = post(console, page, "rules:add")
    draft = resp.text

    # Someone changes the rules through the API meanwhile: the console's save is refused (409).
    api_rule = {"id": "api", "clauses": [{"attribute": "x", "op": "exists"}], "serve": {"bandit": True}}
    assert admin.patch("/v1/flags/shop", json={"rules": [api_rule]}).status_code == 200
    resp = post(
        console, draft, "save", **{"rules-0-clauses-0-attribute": "y", "rules-0-clauses-0-values": "1"}
    )
    assert resp.status_code == 409 and "changed by someone else" in resp.text
    assert [r["id"] for r in admin.get("/v1/flags/shop").json()["rules"]] == ["api"]

    # The page shows the bandit rule with its own table's weights and estimates (rules_report).
    version = admin.get("/v1/flags/shop").json()["rules_report"][0]["version"]
    rows = {"flag": "shop", "version": version, "rule": "api"}
    batch = {
        "batch_id": "console-rule-stats",
        "exposures": [{**rows, "arm": 0, "count": 40}, {**rows, "arm": 1, "count": 60}],
        "rewards": [{**rows, "arm": 1, "count": 30, "sum": 30.0, "sum_sq": 30.0}],
    }
    assert sdk.post("/v1/events", json=batch).status_code == 202
    deadline = time.monotonic() + 10
    while admin.get("/v1/flags/shop").json()["rules_report"][0]["stats"][1]["n"] != 60:
        assert time.monotonic() < deadline, "the rule's stats never arrived"
        time.sleep(0.05)
    page = console.get("/console/flags/shop").text
    report = admin.get("/v1/flags/shop").json()["rules_report"][0]
    assert report["bandit"] and report["weights"]
    block = page[page.index('data-rule="api"') :]
    assert "its own bandit" in block and f"{report['weights'][0] * 100:.1f}%" in block
    assert "100 exposures" in block
    arm_b = block[block.index('data-variant="b"') :]
    assert re.search(r'<td class="num">60</td>\s*<td class="num">0\.5</td>', arm_b), arm_b[:400]

    # An unknown segment is named at its value; without the CSRF token nothing is even read.
    resp = post(
        console, page, "save", **{"rules-0-clauses-0-op": "in_segment", "rules-0-clauses-0-values": "nope"}
    )
    assert resp.status_code == 422 and "unknown segment" in error_for(resp.text, "rules-0-clauses-0-values")
    data = {**fields(page), "action": "save", "csrf": "", "rules-0-id": "renamed"}
    assert console.post("/console/flags/shop/targeting", data=data).status_code == 403
    assert [r["id"] for r in admin.get("/v1/flags/shop").json()["rules"]] == ["api"]

    # A rule without clauses: the server's error under the rule's clauses.
    resp = post(console, page, "rules-0-clauses:remove-0")
    assert 'data-testid="no-clauses"' in resp.text
    resp = post(console, resp.text, "save")
    assert resp.status_code == 422 and "non-empty" in error_for(resp.text, "rules-0-clauses")

    # Long lists are cut short on the page (the editor keeps them whole).
    many = [f"user-{i}" for i in range(60)]
    assert (
        admin.patch("/v1/flags/shop", json={"targets": [{"variant": "b", "units": many}]}).status_code == 200
    )
    page = console.get("/console/flags/shop").text
    assert "user-49" in page[: page.index("targeting-edit")] and "and 10 more" in page
    assert "user-59" not in page[: page.index("targeting-edit")] and fields(page)[
        "targets-0-units"
    ] == "\n".join(many)

    # Removing the last rule and saving clears the rules.
    resp = post(console, page, "rules:remove-0")
    assert "rules-0-id" not in fields(resp.text)
    assert post(console, resp.text, "save").status_code == 303
    assert admin.get("/v1/flags/shop").json()["rules"] == []
