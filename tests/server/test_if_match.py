"""``ETag`` and ``If-Match`` on flags and segments: an operator's read-modify-write (or delete) fails with
412, changing nothing, when another operator changed it in between; a recompute in between does not
fail a flag's."""

from __future__ import annotations

from typing import Any

FLAG = {"key": "checkout-button", "variants": ["blue", "green"], "policy": {"name": "thompson"}}


def test_a_stale_if_match_changes_nothing_and_a_current_one_writes(app: Any) -> None:
    created = app.admin.post("/v1/flags", json=FLAG)
    assert created.status_code == 201
    got = app.admin.get("/v1/flags/checkout-button")
    etag = got.headers["ETag"]
    assert etag == got.json()["etag"] == created.json()["etag"] and etag.startswith('"')

    # Another operator's change: the ETag moves.
    other = app.admin.patch("/v1/flags/checkout-button", json={"description": "theirs"})
    assert other.status_code == 200 and other.headers["ETag"] != etag

    # Ours, written against what we read: refused, naming the header, and nothing changed.
    ours = {"rules": [{"id": "de", "clauses": [{"attribute": "country", "op": "in", "values": ["DE"]}],
                       "serve": {"variant": "green"}}]}  # fmt: skip
    stale = app.admin.patch("/v1/flags/checkout-button", json=ours, headers={"If-Match": etag})
    assert stale.status_code == 412, stale.text
    err = stale.json()["error"]
    assert err["code"] == "precondition_failed" and err["field"] == "If-Match"
    assert stale.headers["ETag"] == other.headers["ETag"]
    now = app.admin.get("/v1/flags/checkout-button").json()
    assert now["rules"] == [] and now["description"] == "theirs"
    audit = app.admin.get("/v1/flags/checkout-button/audit").json()["entries"]
    assert [e["action"] for e in audit] == ["update", "create"]

    # Read again, then write: accepted; a list of ETags or * match too.
    fresh = app.admin.get("/v1/flags/checkout-button").headers["ETag"]
    ok = app.admin.patch("/v1/flags/checkout-button", json=ours, headers={"If-Match": f'"x", {fresh}'})
    assert ok.status_code == 200 and [r["id"] for r in ok.json()["rules"]] == ["de"]
    assert ok.headers["ETag"] == ok.json()["etag"] != fresh
    star = app.admin.patch("/v1/flags/checkout-button", json={"exploration": 0.5}, headers={"If-Match": "*"})
    assert star.status_code == 200
    # Without If-Match: as before (last write wins).
    assert app.admin.patch("/v1/flags/checkout-button", json={"exploration": 0.6}).status_code == 200


def test_a_recompute_in_between_keeps_the_etag(app: Any) -> None:
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    etag = app.admin.get("/v1/flags/checkout-button").headers["ETag"]
    body = {"exposures": [{"flag": "checkout-button", "version": 1, "arm": a, "count": 500} for a in (0, 1)],
            "rewards": [{"flag": "checkout-button", "version": 1, "arm": 1, "count": 90, "sum": 90.0,
                         "sum_sq": 90.0}], "batch_id": "batch-etag-1"}  # fmt: skip
    assert app.sdk.post("/v1/events", json=body).status_code == 202
    recomputed = app.admin.post("/v1/flags/checkout-button/recompute")
    assert recomputed.status_code == 200 and recomputed.json()["version"] > 1  # the weights moved
    assert recomputed.json()["etag"] == etag
    resp = app.admin.patch("/v1/flags/checkout-button", json={"state": "frozen"}, headers={"If-Match": etag})
    assert resp.status_code == 200 and resp.json()["state"] == "frozen"


def test_a_segments_stale_if_match_changes_nothing_and_a_current_one_writes(app: Any) -> None:
    created = app.admin.post("/v1/segments", json={"key": "beta", "included": ["a", "b"]})
    assert created.status_code == 201
    got = app.admin.get("/v1/segments/beta")
    etag = got.headers["ETag"]
    assert etag == got.json()["etag"] == created.json()["etag"] and etag.startswith('"')

    # Another operator adds a unit: the ETag moves.
    other = app.admin.patch("/v1/segments/beta", json={"included": ["a", "b", "c"]})
    assert other.status_code == 200 and other.headers["ETag"] == other.json()["etag"] != etag

    # Ours, computed from what we read (a, b) minus b: refused, and their c is still there.
    stale = app.admin.patch("/v1/segments/beta", json={"included": ["a"]}, headers={"If-Match": etag})
    assert stale.status_code == 412, stale.text
    err = stale.json()["error"]
    assert err["code"] == "precondition_failed" and err["field"] == "If-Match"
    assert stale.headers["ETag"] == other.headers["ETag"]
    assert app.admin.get("/v1/segments/beta").json()["included"] == ["a", "b", "c"]
    audit = app.admin.get("/v1/segments/beta/audit").json()["entries"]
    assert [e["action"] for e in audit] == ["update", "create"]

    # Read again, then write: accepted; a list naming it, or *, too; none: last write wins.
    fresh = app.admin.get("/v1/segments/beta").headers["ETag"]
    ok = app.admin.patch(
        "/v1/segments/beta", json={"included": ["a", "c"]}, headers={"If-Match": f'"x", {fresh}'}
    )
    assert ok.status_code == 200 and ok.json()["included"] == ["a", "c"] and ok.headers["ETag"] != fresh
    star = app.admin.patch("/v1/segments/beta", json={"description": "d"}, headers={"If-Match": "*"})
    assert star.status_code == 200
    assert app.admin.patch("/v1/segments/beta", json={"description": "e"}).status_code == 200
    empty = app.admin.patch("/v1/segments/beta", json={"description": "f"}, headers={"If-Match": " "})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "If-Match"


def test_a_stale_if_match_deletes_nothing(app: Any) -> None:
    assert app.admin.post("/v1/flags", json=FLAG).status_code == 201
    assert app.admin.post("/v1/segments", json={"key": "beta"}).status_code == 201
    flag_etag = app.admin.get("/v1/flags/checkout-button").headers["ETag"]
    seg_etag = app.admin.get("/v1/segments/beta").headers["ETag"]
    assert app.admin.patch("/v1/flags/checkout-button", json={"description": "theirs"}).status_code == 200
    assert app.admin.patch("/v1/segments/beta", json={"description": "theirs"}).status_code == 200

    # Deleting what someone changed since we looked: refused, and both are still there.
    for path, etag in (("/v1/flags/checkout-button", flag_etag), ("/v1/segments/beta", seg_etag)):
        r = app.admin.delete(path, headers={"If-Match": etag})
        assert r.status_code == 412 and r.json()["error"]["field"] == "If-Match", r.text
        assert app.admin.get(path).status_code == 200
        assert app.admin.delete(path, headers={"If-Match": ""}).status_code == 422
    flag_audit = app.admin.get("/v1/flags/checkout-button/audit").json()["entries"]
    assert "delete" not in [e["action"] for e in flag_audit]

    # With the current ETag: deleted.
    for path in ("/v1/flags/checkout-button", "/v1/segments/beta"):
        current = app.admin.get(path).headers["ETag"]
        assert app.admin.delete(path, headers={"If-Match": current}).status_code == 204
        assert app.admin.get(path).status_code == 404
