"""Flags API in-process (Starlette TestClient): CRUD, validation with nothing half-applied, controls."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from banditflags_server.engine.allocation import decode_rle, minimal_movement
from banditflags_server.service.recompute import recompute_due


def _create(app: Any, key: str = "btn", **extra: Any) -> dict[str, Any]:
    r = app.admin.post("/v1/flags", json={"key": key, "variants": ["a", "b", "c"], **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _events(app: Any, batch_id: str, flag: str, version: int, n: list[int], s: list[int]) -> None:
    body = {
        "batch_id": batch_id,
        "exposures": [{"flag": flag, "version": version, "arm": i, "count": c} for i, c in enumerate(n) if c],
        "rewards": [
            {"flag": flag, "version": version, "arm": i, "count": c, "sum": c, "sum_sq": c}
            for i, c in enumerate(s)
            if c
        ],
    }
    assert app.sdk.post("/v1/events", json=body).status_code == 202


def _snapshot(app: Any) -> tuple[int, Any]:
    return app.store.revision(), app.admin.get("/v1/flags").json()


def test_create_read_list_delete(app: Any) -> None:
    flag = _create(app, description="hello", control="b")
    assert flag["version"] == 1 and flag["control"] == "b" and flag["state"] == "running"
    assert flag["weights"] == [0.3334, 0.3333, 0.3333] or sorted(flag["weights"]) == [0.3333, 0.3333, 0.3334]
    assert [s["variant"] for s in flag["stats"]] == ["a", "b", "c"]
    assert all(s["n"] == 0 and s["mean"] is None for s in flag["stats"])
    assert flag["policy"]["name"] == "thompson" and "floor" in flag["policy"]
    assert len(flag["salt"]) == 16
    assert app.admin.get("/v1/flags/btn").json()["salt"] == flag["salt"]
    assert [f["key"] for f in app.admin.get("/v1/flags").json()["flags"]] == ["btn"]
    assert "stats" in app.admin.get("/v1/flags?stats=true").json()["flags"][0]
    assert app.admin.post("/v1/flags", json={"key": "btn", "variants": ["x"]}).status_code == 409
    assert app.admin.delete("/v1/flags/btn").status_code == 204
    assert app.admin.get("/v1/flags/btn").status_code == 404
    assert app.admin.delete("/v1/flags/btn").status_code == 404
    assert app.admin.get("/v1/flags/btn/history").status_code == 404


def test_fixed_policy_serves_its_weights_and_exploration_throttles(app: Any) -> None:
    flag = _create(app, "ab", policy={"name": "fixed", "weights": [1, 1, 2]})
    assert flag["weights"] == [0.25, 0.25, 0.5]
    half = _create(app, "half", policy={"name": "fixed", "weights": [0, 0, 1]}, exploration=0.5)
    assert half["weights"] == [0.5, 0.0, 0.5]


BAD = [
    ({"key": "new", "variants": ["a", "a"]}, 422, "variants[1].key"),
    ({"key": "new", "variants": ["a"], "policy": {"floor": -1}}, 422, "policy.floor"),
    ({"key": "btn", "variants": ["a"]}, 409, "key"),
    ({"key": "NEW", "variants": ["a"]}, 422, "key"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD)
def test_bad_creates_change_nothing(app: Any, body: dict[str, Any], status: int, field: str) -> None:
    _create(app)
    before = _snapshot(app)
    r = app.admin.post("/v1/flags", json=body)
    assert r.status_code == status
    assert r.json()["error"]["field"] == field
    assert _snapshot(app) == before


BAD_PATCHES = [
    ({"state": "paused"}, "state"),
    ({"exploration": -0.1}, "exploration"),
    ({"state": "killed", "exploration": 2}, "exploration"),  # the valid part is not applied either
    ({"policy": {"name": "fixed", "weights": [1]}}, "policy.weights"),
    ({"policy": {"floor": 1}}, "policy.floor"),
    ({"variants": ["x"]}, "variants"),
    ({"baseline": "best"}, "baseline"),
    ({"recompute_interval": -1}, "recompute_interval"),
]


@pytest.mark.parametrize(("body", "field"), BAD_PATCHES)
def test_bad_patches_change_nothing(app: Any, body: dict[str, Any], field: str) -> None:
    _create(app)
    before = _snapshot(app)
    r = app.admin.patch("/v1/flags/btn", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == field and err["code"] == "invalid_field" and err["errors"]
    assert _snapshot(app) == before


def test_bad_bodies_are_400_415(app: Any) -> None:
    _create(app)
    r = app.admin.post("/v1/flags", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = app.admin.post("/v1/flags", content=b"key=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = app.admin.patch(
        "/v1/flags/btn", content=b"{}", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415
    r = app.admin.post("/v1/flags", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] is None
    assert app.admin.patch("/v1/flags/ghost", json={"state": "killed"}).status_code == 404
    assert app.admin.put("/v1/flags/btn", json={}).json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"reason": "done", "state": "killed"}', "state"),
        (b'{"reason": 5}', "reason"),
        (b"[1]", None),
    ],
)
def test_a_delete_body_holds_a_reason_and_nothing_else(app: Any, content: bytes, field: str | None) -> None:
    _create(app)
    before = _snapshot(app)
    r = app.admin.request(
        "DELETE", "/v1/flags/btn", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == field
    assert _snapshot(app) == before


def test_an_events_answer_lists_ignored_rows(app: Any) -> None:
    _create(app)
    row = {"flag": "ghost", "version": 1, "arm": 0, "count": 1}
    r = app.sdk.post("/v1/events", json={"batch_id": "batch-ig1", "exposures": [row], "config_revision": 1})
    assert r.status_code == 202 and r.headers["content-type"] == "application/json"
    assert r.content == (
        b'{"batch_id":"batch-ig1","duplicate":false,"exposures":0,"rewards":0,'
        b'"ignored":[{"field":"exposures[0]","reason":"unknown flag"}],"duplicates":0}'
    )


def test_killed_keeps_the_table_and_unkill_restores_it(app: Any) -> None:
    _create(app)
    _events(app, "batch-k1", "btn", 1, [1000, 1000, 1000], [10, 10, 400])
    assert app.admin.post("/v1/flags/btn/recompute").status_code == 200
    before = next(f for f in app.sdk.get("/v1/config").json()["flags"] if f["key"] == "btn")
    assert before["version"] == 2
    killed = app.admin.patch("/v1/flags/btn", json={"state": "killed"}).json()
    assert killed["state"] == "killed" and killed["version"] == 2
    cfg = next(f for f in app.sdk.get("/v1/config").json()["flags"] if f["key"] == "btn")
    assert cfg["state"] == "killed" and cfg["table"] == before["table"] and cfg["version"] == 2
    assert app.admin.post("/v1/flags/btn/recompute").status_code == 409
    assert recompute_due(app.store, np.random.default_rng(0), now=1e12) == []  # not running: not due
    app.admin.patch("/v1/flags/btn", json={"state": "running"})
    cfg = next(f for f in app.sdk.get("/v1/config").json()["flags"] if f["key"] == "btn")
    assert cfg["state"] == "running" and cfg["table"] == before["table"]


def test_exploration_zero_sends_all_to_baseline_with_minimal_movement(app: Any) -> None:
    _create(app, policy={"name": "fixed", "weights": [0.2, 0.3, 0.5]})
    old = app.admin.get("/v1/flags/btn").json()
    flag = app.admin.patch("/v1/flags/btn", json={"exploration": 0.0}).json()
    assert flag["weights"] == [1.0, 0.0, 0.0] and flag["version"] == 2 and flag["exploration"] == 0.0
    hist = app.admin.get("/v1/flags/btn/history").json()["versions"]
    assert [v["reason"] for v in hist] == ["created", "exploration"]
    old_counts = [round(w * 10000) for w in old["weights"]]
    assert hist[1]["moved"] == minimal_movement(old_counts, [10000, 0, 0]) == 8000
    # Same weights again: no new version.
    assert app.admin.patch("/v1/flags/btn", json={"exploration": 0.0}).json()["version"] == 2
    back = app.admin.patch("/v1/flags/btn", json={"exploration": 1.0}).json()
    assert back["weights"] == [0.2, 0.3, 0.5] and back["version"] == 3


def test_frozen_keeps_its_version(app: Any) -> None:
    _create(app)
    _events(app, "batch-f1", "btn", 1, [1000, 1000, 1000], [10, 10, 400])
    app.admin.patch("/v1/flags/btn", json={"state": "frozen"})
    r = app.admin.post("/v1/flags/btn/recompute")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert recompute_due(app.store, np.random.default_rng(0), now=1e12) == []
    assert app.admin.get("/v1/flags/btn").json()["version"] == 1
    # Stats keep coming in while frozen.
    _events(app, "batch-f2", "btn", 1, [5, 0, 0], [0, 0, 0])
    assert app.admin.get("/v1/flags/btn").json()["stats"][0]["n"] == 1005


def test_recompute_moves_weights_toward_a_clear_winner(app: Any) -> None:
    _create(app, policy={"name": "thompson", "max_step": None})
    _events(app, "batch-w1", "btn", 1, [2000, 2000, 2000], [40, 50, 400])
    flag = app.admin.post("/v1/flags/btn/recompute").json()
    assert flag["version"] == 2 and flag["recomputed_at"] is not None
    assert flag["weights"][2] > 0.9 and flag["bandit_weights"][2] > 0.9
    assert flag["stats"][2]["p_best"] > 0.99
    hist = app.admin.get("/v1/flags/btn/history").json()["versions"]
    assert hist[1]["reason"] == "recompute"
    counts = [[round(w * 10000) for w in v["weights"]] for v in hist]
    assert hist[1]["moved"] == minimal_movement(counts[0], counts[1])
    cfg = next(f for f in app.sdk.get("/v1/config").json()["flags"] if f["key"] == "btn")
    table = decode_rle(cfg["table"], 3)
    assert [table.count(i) for i in range(3)] == counts[1]
    stats = app.admin.get("/v1/flags/btn/stats").json()
    assert stats["version"] == 2 and [p["version"] for p in stats["periods"]] == [1, 2]
    assert stats["periods"][0]["n"] == [2000, 2000, 2000]
    assert stats["variants"][2]["sum_sq"] == 400.0


def test_policy_change_recomputes_at_once(app: Any) -> None:
    _create(app)
    flag = app.admin.patch("/v1/flags/btn", json={"policy": {"name": "fixed", "weights": [0, 0, 1]}}).json()
    assert flag["weights"] == [0.0, 0.0, 1.0] and flag["policy"]["name"] == "fixed"
    assert app.admin.get("/v1/flags/btn/history").json()["versions"][-1]["reason"] == "policy"
    # The rest of the policy merges: a floor on top of the fixed weights is kept.
    flag = app.admin.patch("/v1/flags/btn", json={"description": "d", "recompute_interval": 5}).json()
    assert flag["description"] == "d" and flag["recompute_interval"] == 5 and flag["version"] == 2


def test_leader_baseline(app: Any) -> None:
    _create(app, baseline="leader", exploration=0.0)
    _events(app, "batch-l1", "btn", 1, [1000, 1000, 1000], [10, 300, 10])
    flag = app.admin.post("/v1/flags/btn/recompute").json()
    assert flag["weights"] == [0.0, 1.0, 0.0]


def test_a_flag_with_one_variant_is_a_plain_flag_not_an_experiment(app: Any) -> None:
    r = app.admin.post("/v1/flags", json={"key": "plain", "variants": ["on"]})
    assert r.status_code == 201, r.text
    flag = r.json()
    assert flag["policy"]["name"] == "fixed" and flag["weights"] == [1.0]
    for policy in ({"name": "thompson"}, {"floor": 0.1}):
        r = app.admin.post("/v1/flags", json={"key": "one", "variants": ["on"], "policy": policy})
        assert r.status_code == 422 and r.json()["error"]["field"] == "policy.name"
        assert "a bandit needs two variants or more" in r.json()["error"]["message"]
    r = app.admin.patch("/v1/flags/plain", json={"policy": {"name": "ucb1"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "policy.name"
    assert app.admin.get("/v1/flags/plain").json()["policy"]["name"] == "fixed"
    fixed = {"key": "one", "variants": ["on"], "policy": {"name": "fixed", "weights": [1]}}
    assert app.admin.post("/v1/flags", json=fixed).status_code == 201


def test_the_default_step_limit_spreads_a_clear_winner_over_recomputes(app: Any) -> None:
    """max_step 0.3 by default (issue 11): the first recompute after the burn-in moves no weight by more
    than 0.3 (1/3 -> 0.63, not 0.98 at once); the next ones go on toward the winner."""
    flag = _create(app)
    assert flag["policy"]["max_step"] == 0.3
    _events(app, "batch-s1", "btn", 1, [2000, 2000, 2000], [40, 50, 400])
    steps = [flag["bandit_weights"]]
    for _ in range(3):
        steps.append(app.admin.post("/v1/flags/btn/recompute").json()["bandit_weights"])
    moves = [max(abs(b - a) for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(steps)]
    assert moves[0] == pytest.approx(0.3) and moves[1] == pytest.approx(0.3)
    assert steps[1][2] == pytest.approx(1 / 3 + 0.3) and steps[3][2] > 0.9
    assert all(m <= 0.3 + 1e-9 for m in moves)
