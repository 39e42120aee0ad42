"""Segment pooling through the real server (uvicorn on a loopback port, SQLite): a flag with two bandit
rules; events per rule over HTTP; ``POST /recompute``; the small rule's allocation follows the flag's best
arm with ``pooling: "auto"`` and stays in burn-in with ``"off"``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

RULES = [
    {"id": c, "clauses": [{"attribute": "country", "op": "in", "values": [c]}], "serve": {"bandit": True}}
    for c in ("us", "fr")
]


def _rows(rule: str | None, n: list[int], s: list[int]) -> dict[str, list[dict[str, Any]]]:
    tag = {} if rule is None else {"rule": rule}
    return {
        "exposures": [{"flag": "seg", "version": 1, "arm": i, "count": c, **tag} for i, c in enumerate(n)],
        "rewards": [
            {"flag": "seg", "version": 1, "arm": i, "count": c, "sum": c, "sum_sq": c, **tag}
            for i, c in enumerate(s)
            if c
        ],
    }


@pytest.mark.parametrize("pooling", ["auto", "off"])
def test_pooling_through_the_server(admin: httpx.Client, sdk: httpx.Client, pooling: str) -> None:
    policy = {"name": "thompson", "burn_in": 100, "max_step": None, "pooling": pooling}
    r = admin.post("/v1/flags", json={"key": "seg", "variants": ["a", "b", "c"], "policy": policy,
                                      "rules": RULES})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["policy"]["pooling"] == pooling
    for i, (rule, n, s) in enumerate(
        [(None, [3000] * 3, [150, 160, 240]), ("fr", [2000] * 3, [60, 62, 100]), ("us", [8] * 3, [1, 0, 1])]
    ):
        r = sdk.post("/v1/events", json={"batch_id": f"pooling-batch-{i}", **_rows(rule, n, s)})
        assert r.status_code == 202, r.text
    assert admin.post("/v1/flags/seg/recompute").status_code == 200
    flag = admin.get("/v1/flags/seg").json()
    us, fr = flag["rule_allocations"]["us"], flag["rule_allocations"]["fr"]
    assert max(range(3), key=lambda i: fr["weights"][i]) == 2
    if pooling == "auto":
        assert us["version"] == 2 and us["weights"][2] > 0.9
    else:
        assert us["version"] == 1 and us["weights"] == pytest.approx([1 / 3] * 3, abs=1e-3)
    bad = admin.patch("/v1/flags/seg", json={"policy": {"pooling": "sometimes"}})
    assert bad.status_code == 422 and "policy.pooling" in bad.text
