"""The audit log: every control change with the acting key's *name*, before and after, the reason;
never the key; nothing for rejected or no-op requests; kept after a delete."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa

from banditflags_server.storage.schema import audit_log

FLAG = {
    "key": "checkout-button",
    "variants": [{"key": "blue", "value": "#00f"}, "green", "orange"],
    "control": "blue",
    "policy": {"name": "thompson", "burn_in": 10},
}


def entries(app: Any, key: str = "checkout-button", **params: Any) -> list[dict[str, Any]]:
    resp = app.admin.get(f"/v1/flags/{key}/audit", params=params)
    assert resp.status_code == 200, resp.text
    got: list[dict[str, Any]] = resp.json()["entries"]
    return got


def test_every_control_change_is_recorded_with_the_key_name(app: Any) -> None:
    assert app.admin.post("/v1/flags", json={**FLAG, "reason": "launch"}).status_code == 201
    steps = [
        (
            {"exploration": 0.2, "reason": "sale weekend"},
            "throttle",
            {"exploration": 1.0},
            {"exploration": 0.2},
        ),
        ({"state": "frozen"}, "freeze", {"state": "running"}, {"state": "frozen"}),
        ({"state": "killed", "reason": "errors up 4x"}, "kill", {"state": "frozen"}, {"state": "killed"}),
        ({"state": "frozen"}, "unkill", {"state": "killed"}, {"state": "frozen"}),
        ({"state": "running"}, "resume", {"state": "frozen"}, {"state": "running"}),
        ({"policy": {"floor": 0.05}}, "policy", None, None),
        ({"description": "colour test"}, "update", {"description": ""}, {"description": "colour test"}),
    ]
    for body, action, before, after in steps:
        assert app.admin.patch("/v1/flags/checkout-button", json=body).status_code == 200, body
        got = entries(app, limit=1)[0]
        assert got["action"] == action and got["actor"] == "env-admin", got
        assert got["reason"] == body.get("reason", "")
        if before is not None:
            assert {k: got["before"][k] for k in before} == before
            assert {k: got["after"][k] for k in after} == after
    policy = entries(app, limit=2)[1]
    assert policy["before"]["policy"] == {"name": "thompson", "burn_in": 10}
    assert policy["after"]["policy"] == {"name": "thompson", "burn_in": 10, "floor": 0.05}
    throttle = entries(app)[-2]
    assert throttle["action"] == "throttle"
    # A throttle moves the table: the log shows the served weights and versions on both sides.
    assert throttle["before"]["version"] == 1 and throttle["after"]["version"] == 2
    assert throttle["before"]["weights"] != throttle["after"]["weights"]
    created = entries(app)[-1]
    assert created["action"] == "create" and created["before"] is None and created["reason"] == "launch"
    assert (
        created["after"]["variants"] == ["blue", "green", "orange"] and created["after"]["control"] == "blue"
    )
    assert len(entries(app)) == len(steps) + 1
    # Newest first, with ids and UTC timestamps.
    ids = [e["id"] for e in entries(app)]
    assert ids == sorted(ids, reverse=True)
    assert all(e["at"].endswith("Z") for e in entries(app))


def test_the_key_itself_is_never_stored_or_shown(app: Any) -> None:
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    assert app.admin.patch("/v1/flags/checkout-button", json={"state": "killed"}).status_code == 200
    shown = app.admin.get("/v1/flags/checkout-button/audit").text
    with app.store.engine.connect() as conn:
        stored = json.dumps([list(map(str, row)) for row in conn.execute(sa.select(audit_log))])
    for text in (shown, stored):
        assert app.admin_key not in text and app.sdk_key not in text
        assert "env-admin" in text
    assert hashlib.sha256(app.admin_key.encode()).hexdigest() not in stored


def test_rejected_and_no_op_requests_leave_no_entry(app: Any) -> None:
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    assert app.admin.patch("/v1/flags/checkout-button", json={"state": "paused"}).status_code == 422
    assert app.admin.patch("/v1/flags/checkout-button", json={"exploration": 2}).status_code == 422
    bad_reason = app.admin.patch("/v1/flags/checkout-button", json={"state": "killed", "reason": 7})
    assert bad_reason.status_code == 422 and bad_reason.json()["error"]["field"] == "reason"
    long_reason = {"state": "killed", "reason": "x" * 501}
    assert app.admin.patch("/v1/flags/checkout-button", json=long_reason).status_code == 422
    assert app.admin.get("/v1/flags/checkout-button").json()["state"] == "running"  # nothing applied
    assert app.admin.patch("/v1/flags/checkout-button", json={"state": "running"}).status_code == 200  # no-op
    assert [e["action"] for e in entries(app)] == ["create"]
    assert app.admin.post("/v1/flags", json={**FLAG, "reason": ["no"]}).status_code == 422


def test_delete_is_recorded_and_the_log_outlives_the_flag(app: Any) -> None:
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    assert (
        app.admin.delete("/v1/flags/checkout-button", params={"reason": "experiment over"}).status_code == 204
    )
    assert app.admin.get("/v1/flags/checkout-button").status_code == 404
    got = entries(app)
    assert [e["action"] for e in got] == ["delete", "create"]
    assert got[0]["before"]["variants"] == ["blue", "green", "orange"] and got[0]["after"] is None
    assert got[0]["reason"] == "experiment over"
    # Recreated under the same key: one trail.
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    resp = app.admin.request("DELETE", "/v1/flags/checkout-button", json={"reason": "again"})
    assert resp.status_code == 204
    assert [e["action"] for e in entries(app)] == ["delete", "create", "delete", "create"]
    bad = app.admin.request("DELETE", "/v1/flags/checkout-button", json={"state": "x"})
    assert bad.status_code in (404, 422)


def test_audit_endpoint_errors_and_paging(app: Any) -> None:
    assert app.admin.get("/v1/flags/nope/audit").status_code == 404
    assert app.sdk.get("/v1/flags/nope/audit").status_code == 403
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    for e in (0.9, 0.8, 0.7, 0.6):
        assert app.admin.patch("/v1/flags/checkout-button", json={"exploration": e}).status_code == 200
    first = entries(app, limit=2)
    assert len(first) == 2 and first[0]["after"]["exploration"] == 0.6
    rest = entries(app, before=first[-1]["id"])
    assert [e["action"] for e in rest] == ["throttle", "throttle", "create"]
    for params in ({"limit": "0"}, {"limit": "x"}, {"before": "-1"}):
        resp = app.admin.get("/v1/flags/checkout-button/audit", params=params)
        assert resp.status_code == 422 and resp.json()["error"]["field"] in params


def test_a_segments_changes_have_their_own_trail(app: Any) -> None:
    """``GET /v1/segments/{key}/audit``: create, update and delete of a segment, with the key's name,
    before and after, and the reason; kept after the delete; separate from a flag of the same key."""
    seg = {"key": "checkout-button", "included": ["a"], "description": "beta testers", "reason": "new"}
    assert app.admin.get("/v1/segments/checkout-button/audit").status_code == 404
    assert app.admin.post("/v1/segments", json=seg).status_code == 201
    patch = {"included": ["a", "b"], "reason": "two more"}
    assert app.admin.patch("/v1/segments/checkout-button", json=patch).status_code == 200
    assert app.admin.patch("/v1/segments/checkout-button", json={"excluded": ["c"]}).status_code == 200
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201  # a flag under the same key
    resp = app.admin.request("DELETE", "/v1/segments/checkout-button", json={"reason": "beta over"})
    assert resp.status_code == 204
    assert app.admin.get("/v1/segments/checkout-button").status_code == 404

    def segment_entries(**params: Any) -> list[dict[str, Any]]:
        r = app.admin.get("/v1/segments/checkout-button/audit", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["key"] == "checkout-button"
        got: list[dict[str, Any]] = r.json()["entries"]
        return got

    got = segment_entries()
    assert [e["action"] for e in got] == ["delete", "update", "update", "create"]
    assert all(e["actor"] == "env-admin" for e in got)
    assert [e["reason"] for e in got] == ["beta over", "", "two more", "new"]
    assert got[2]["before"]["included"] == ["a"] and got[2]["after"]["included"] == ["a", "b"]
    assert got[0]["before"]["included"] == ["a", "b"] and got[0]["after"] is None
    assert got[3]["before"] is None and got[3]["after"]["description"] == "beta testers"
    assert [e["action"] for e in entries(app)] == ["create"]  # the flag's trail holds only its own
    # Paging and errors as for flags.
    first = segment_entries(limit=2)
    assert [e["action"] for e in first] == ["delete", "update"]
    assert [e["action"] for e in segment_entries(before=first[-1]["id"])] == ["update", "create"]
    for params in ({"limit": "0"}, {"limit": "x"}, {"before": "-1"}):
        r = app.admin.get("/v1/segments/checkout-button/audit", params=params)
        assert r.status_code == 422 and r.json()["error"]["field"] in params
    assert app.sdk.get("/v1/segments/checkout-button/audit").status_code == 403
    assert app.admin.get("/v1/segments/no-such/audit").status_code == 404
