"""The console's segment pages over plain HTTP (issue 12): create with clause rows (errors next to their
fields, nothing created), edit, audit, CSRF, and a delete refused with the flags that use it."""

from __future__ import annotations

import re

import httpx
from tests.console.helpers import csrf, error_for


def test_segment_create_edit_delete(console: httpx.Client, admin: httpx.Client, sdk: httpx.Client) -> None:
    page = console.get("/console/segments")
    assert page.status_code == 200 and "No segments yet" in page.text
    token = csrf(console.get("/console/new-segment").text)
    form = {
        "csrf": token,
        "key": "Beta Testers",
        "description": "opted in",
        "clauses-0-attribute": "plan",
        "clauses-0-op": "in_segment",
        "clauses-0-values": "other",
        "included": "alice\nbob\nalice",
        "excluded": "mallory",
    }
    # "Add clause" only changes the form.
    resp = console.post("/console/new-segment", data={**form, "action": "clauses:add"})
    assert resp.status_code == 200 and 'name="clauses-1-op"' in resp.text and "Not saved yet" in resp.text
    # Every mistake next to its field (the API's own checks); nothing is created.
    resp = console.post("/console/new-segment", data={**form, "action": "save"})
    assert resp.status_code == 422
    assert "must match" in error_for(resp.text, "key")
    assert admin.get("/v1/segments").json()["segments"] == []
    form["key"] = "beta-testers"
    resp = console.post("/console/new-segment", data={**form, "action": "save"})
    assert resp.status_code == 422
    assert "in_segment" in error_for(resp.text, "clauses-0-op")
    assert error_for(resp.text, "included").startswith("unit 3: ")
    assert admin.get("/v1/segments").json()["segments"] == []

    form.update({"clauses-0-op": "ends_with", "clauses-0-values": "@corp.test", "included": "alice\nbob"})
    form.update({"reason": "beta launch"})
    resp = console.post("/console/new-segment", data={**form, "action": "save"})
    assert (
        resp.status_code == 303 and resp.headers["location"] == "/console/segments/beta-testers?done=create"
    )
    seg = admin.get("/v1/segments/beta-testers").json()
    assert seg["clauses"] == [
        {"attribute": "plan", "op": "ends_with", "values": ["@corp.test"], "negate": False}
    ]
    assert seg["included"] == ["alice", "bob"] and seg["excluded"] == ["mallory"]
    served = sdk.get("/v1/config").json()["segments"]
    assert [s["key"] for s in served] == ["beta-testers"]

    # Edit: remove the clause (form only), then save; audited as the session's key.
    page = console.get("/console/segments/beta-testers").text
    base = {"csrf": csrf(page), "description": "opted in", "included": "alice", "excluded": ""}
    resp = console.post(
        "/console/segments/beta-testers",
        data={
            **base,
            "clauses-0-attribute": "plan",
            "clauses-0-op": "ends_with",
            "action": "clauses:remove-0",
        },
    )
    assert resp.status_code == 200 and 'name="clauses-0-op"' not in resp.text
    resp = console.post("/console/segments/beta-testers", data={**base, "action": "save", "reason": "shrink"})
    assert resp.status_code == 303
    seg = admin.get("/v1/segments/beta-testers").json()
    assert seg["clauses"] == [] and seg["included"] == ["alice"] and seg["excluded"] == []
    page = console.get("/console/segments/beta-testers").text
    audit = page[page.index('data-testid="audit"') :]
    assert audit.count("<tr>") == 3 and "shrink" in audit and "beta launch" in audit and "env-admin" in audit

    # Changed through the API after the page was loaded: the console's save is refused (409).
    base = re.search(r'name="base" value="([^"]+)"', page)
    assert base is not None
    assert admin.patch("/v1/segments/beta-testers", json={"excluded": ["eve"]}).status_code == 200
    stale = {
        "csrf": csrf(page),
        "base": base[1],
        "description": "",
        "included": "",
        "excluded": "",
        "action": "save",
    }
    resp = console.post("/console/segments/beta-testers", data=stale)
    assert resp.status_code == 409 and "changed by someone else" in resp.text
    assert admin.get("/v1/segments/beta-testers").json()["excluded"] == ["eve"]

    # A flag names it: deleting is refused with that flag listed; the segment stays.
    rule = {
        "id": "beta",
        "clauses": [{"op": "in_segment", "values": ["beta-testers"]}],
        "serve": {"variant": "b"},
    }
    flag = {"key": "shop", "variants": ["a", "b"], "rules": [rule]}
    assert admin.post("/v1/flags", json=flag).status_code == 201
    listed = console.get("/console/segments").text
    assert 'href="/console/flags/shop"' in listed
    resp = console.post("/console/segments/beta-testers/delete", data={"csrf": csrf(page)})
    assert resp.status_code == 409
    refused = resp.text[resp.text.index('data-testid="delete-error"') :]
    assert "used by the rules of flags: shop" in refused and 'href="/console/flags/shop#targeting"' in refused
    assert admin.get("/v1/segments/beta-testers").status_code == 200

    # Without the CSRF token nothing happens; once no rule names it, it is deleted (and audited).
    assert console.post("/console/segments/beta-testers/delete", data={}).status_code == 403
    assert admin.patch("/v1/flags/shop", json={"rules": []}).status_code == 200
    resp = console.post("/console/segments/beta-testers/delete", data={"csrf": csrf(page), "reason": "done"})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/segments?done=delete"
    assert admin.get("/v1/segments/beta-testers").status_code == 404
    assert console.get("/console/segments/beta-testers").status_code == 404
