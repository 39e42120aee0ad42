"""``track(..., metric=...)``: guardrail metric rows, kept apart from the objective's rewards."""

from __future__ import annotations

from typing import Any

from banditflags._inputs import is_valid_metric, reward_item


def test_metric_rows_are_separate_and_any_finite_value(server: Any, make_client: Any, build: Any) -> None:
    objective = {"reward": "binary", "unit": "user", "direction": "maximize", "credit_window": 60}
    server.set_config(build.config(build.flag(objective=objective)))
    client = make_client()
    assert client.wait_until_ready(5)
    d = client.decide("btn", "u1")
    assert client.track(d, reward=1.0)
    assert client.track(d, reward=250.0, metric="latency_ms")  # not 0/1: fine for a metric
    assert client.track(d, reward=150.0, metric="latency_ms")
    assert client.track("btn", "u1", reward=1, metric="errors")
    assert not client.track(d, reward=2.0)  # the binary objective still takes 0/1 only
    assert not client.track(d, reward=1.0, metric="Bad Name")
    assert not client.track(d, reward=float("nan"), metric="errors")
    assert not client.track("nope", "u1", reward=1, metric="errors")
    assert client.flush(5)
    rows = [r for body in server.accepted.values() for r in body["rewards"]]
    objective = [r for r in rows if "metric" not in r]
    assert [(r["count"], r["sum"], r["sum_sq"]) for r in objective] == [(1, 1.0, 1.0)]
    by_metric = {r["metric"]: r for r in rows if "metric" in r}
    lat = by_metric["latency_ms"]
    # Each metric value is its own observation (no per-user totals, unlike a user-unit objective).
    assert (lat["count"], lat["sum"], lat["sum_sq"]) == (2, 400.0, 250.0**2 + 150.0**2)
    assert (by_metric["errors"]["count"], by_metric["errors"]["sum"]) == (1, 1.0)
    assert lat["arm"] == by_metric["errors"]["arm"] == objective[0]["arm"]


def test_reward_item_with_metric() -> None:
    assert is_valid_metric("p99.latency-ms") and not is_valid_metric("") and not is_valid_metric(None)
    assert reward_item({}, "nope", "u1", 1.0, "errors") is None
    assert reward_item({}, 42, "u1", 1.0, "errors") is None
