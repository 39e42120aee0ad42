"""Issue 11's controlled run, end to end: the real SDK against the real server over loopback HTTP.

Arm ``a`` converts 30% of its users but every conversion is tracked 4 times (a page reload, a retried
webhook, a worker in another process holding the token); arm ``b`` converts 50%, tracked once. Before
decision ids, the server saw ``a`` at 0.94 and sent 99% of the traffic to it. Now: after a recompute
``b`` is ahead and every mean is within [0, 1].
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from banditflags import Client

FLAG = "dup-conversions"
RATES = {"a": 0.30, "b": 0.50}


@pytest.fixture
def server(live_server: Any) -> Iterator[Any]:
    handle = live_server()
    yield handle
    handle.stop()


def test_repeated_conversions_do_not_fool_the_bandit(server: Any) -> None:
    admin = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=30
    )
    created = admin.post(
        "/v1/flags",
        json={
            "key": FLAG,
            "variants": ["a", "b"],
            "control": "a",
            "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
            "policy": {"name": "thompson", "floor": 0.01, "burn_in": 100},
        },
    )
    assert created.status_code == 201, created.text
    rng = random.Random(11)
    app = Client(server.url, sdk_key=server.sdk_key, flush_interval=0.2)
    worker = Client(server.url, sdk_key=server.sdk_key, flush_interval=0.2)  # "another process"
    try:
        assert app.wait_until_ready(10.0) and worker.wait_until_ready(10.0)
        tracked = {"a": 0, "b": 0}
        for i in range(1_200):
            unit = f"user-{i}"
            d = app.decide(FLAG, unit)
            assert d.variant in RATES and d.token is not None
            if rng.random() >= RATES[d.variant]:
                continue
            if d.variant == "b":
                assert app.track(d)
                tracked["b"] += 1
                continue
            # a: the same conversion four times, by every route and from two processes
            assert app.track(d) is True
            assert worker.track(d.token) is True  # new to that process: its id goes to the server
            assert app.track(FLAG, unit) is False
            assert worker.track(d.token) is False
            tracked["a"] += 1
        assert app.flush(20.0) and worker.flush(20.0)
        assert app.stats().duplicates == tracked["a"] and worker.stats().duplicates == tracked["a"]
    finally:
        app.close()
        worker.close()

    response = admin.post(f"/v1/flags/{FLAG}/recompute")
    assert response.status_code == 200, response.text
    flag = response.json()
    stats = {s["variant"]: s for s in flag["stats"]}
    means = {k: stats[k]["mean"] for k in ("a", "b")}
    assert all(0.0 <= m <= 1.0 for m in means.values()), means
    assert means["b"] > means["a"], means
    assert abs(means["a"] - 0.30) < 0.1 and abs(means["b"] - 0.50) < 0.1, means
    weights = dict(zip(("a", "b"), flag["weights"], strict=True))
    assert weights["b"] > weights["a"], weights
    admin.close()
