"""Issue 11 over HTTP: rewards that cannot lie.

The controlled run of the issue through the real server, with raw batches the way the new SDK sends
them (conversions with their decision ids): arm a converts 30% of its units and every conversion is sent
four times across batches, arm b converts 50% once. With ids, arm b leads and every mean is the true rate;
without ids (older SDKs, bf1 tokens) the repeats cannot be told apart, and the server clamps a binary
arm's rewards to its exposures and says so (the flag's ``warnings``, ``clamped``, ``/metrics``), never
a mean above 1. Properties: any sequence of batches with ids and repeats gives each arm the rate of its
distinct converting ids, and any mix with rows without ids stays within [0, 1].
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

UNITS = 2000  # per arm
RATES = {0: 0.3, 1: 0.5}
SENT = {0: 4, 1: 1}  # how many times each conversion of the arm is sent


def did(arm: int, unit: int) -> str:
    return f"{arm:08x}{unit:08x}"


def _post(sdk: Any, exposures: list[dict[str, Any]], rewards: list[dict[str, Any]]) -> dict[str, Any]:
    r = sdk.post(
        "/v1/events",
        json={"batch_id": uuid.uuid4().hex, "sdk": "banditflags-python/0.2.0", "exposures": exposures,
              "rewards": rewards},
    )  # fmt: skip
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _controlled_run(sdk: Any, key: str, *, with_ids: bool) -> int:
    """The issue's run on ``key``; returns the duplicates the server reported."""
    rng = random.Random(11)
    _post(sdk, [{"flag": key, "version": 1, "arm": arm, "count": UNITS} for arm in RATES], [])
    sends: list[tuple[int, str]] = []
    for arm, rate in RATES.items():
        converting = [did(arm, u) for u in range(UNITS) if u < rate * UNITS]
        sends += [(arm, d) for d in converting for _ in range(SENT[arm])]
    rng.shuffle(sends)  # a page reload, a retried webhook: the repeats come in any batch, any order
    duplicates = 0
    for start in range(0, len(sends), 250):
        rows = []
        for arm in RATES:
            ids = [d for a, d in sends[start : start + 250] if a == arm]
            if ids:
                row = {"flag": key, "version": 1, "arm": arm, "count": len(ids), "sum": len(ids),
                       "sum_sq": len(ids)}  # fmt: skip
                if with_ids:
                    row["ids"] = ids
                rows.append(row)
        duplicates += _post(sdk, [], rows)["duplicates"]
    return duplicates


def _metric(url: str, name: str) -> float | None:
    for line in httpx.get(url + "/metrics", timeout=10.0).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "legacy"])
def test_the_duplicate_conversion_run(live_server: Callable[..., Any], with_ids: bool) -> None:
    server = live_server()
    key = "dup-ids" if with_ids else "dup-legacy"
    with server.client("admin") as admin, server.client("sdk") as sdk:
        assert admin.post("/v1/flags", json={"key": key, "variants": ["a", "b"]}).status_code == 201
        duplicates = _controlled_run(sdk, key, with_ids=with_ids)
        r = admin.post(f"/v1/flags/{key}/recompute")
        assert r.status_code == 200, r.text
        flag = r.json()
        stats = admin.get(f"/v1/flags/{key}/stats").json()
    means = [s["mean"] for s in flag["stats"]]
    assert all(0.0 <= m <= 1.0 for m in means), means
    assert all(0.0 <= hi <= 1.0 for s in flag["stats"] for hi in (s["ci_low"], s["ci_high"]))
    if with_ids:
        assert duplicates == 3 * int(RATES[0] * UNITS)  # every repeat found, across batches
        assert means == [RATES[0], RATES[1]]  # the true per-decision conversion rates
        assert flag["stats"][1]["p_best"] > 0.99
        assert flag["bandit_weights"][1] > flag["bandit_weights"][0]  # by max_step (0.3) a recompute
        assert flag["warnings"] == [] and stats["warnings"] == []
        assert [s["clamped"] for s in flag["stats"]] == [0.0, 0.0]
        assert _metric(server.url, f'banditflags_duplicate_conversions_total{{flag="{key}"}}') == duplicates
        assert _metric(server.url, f'banditflags_clamped_rewards{{flag="{key}"}}') is None
    else:
        # 2,400 rewards of 2,000 exposures on arm a: clamped to 2,000, flagged, never a rate above 1.
        assert duplicates == 0
        assert flag["stats"][0]["clamped"] == 400.0 and flag["stats"][0]["sum"] == UNITS
        assert means[0] == 1.0
        assert [w["variant"] for w in flag["warnings"]] == ["a"]
        assert flag["warnings"][0]["code"] == "rewards_above_exposures"
        assert stats["warnings"] == flag["warnings"]
        assert stats["periods"][0]["clamped"] == [400.0, 0.0]
        assert stats["periods"][0]["s"] == [float(UNITS), RATES[1] * UNITS]
        assert _metric(server.url, f'banditflags_clamped_rewards{{flag="{key}"}}') == 400.0


def test_ids_problems_over_http(app: Any) -> None:
    """Bad ids are a 422 naming the field and change nothing; too many ids in a batch are a 413."""
    assert app.admin.post("/v1/flags", json={"key": "bin", "variants": ["a", "b"]}).status_code == 201
    cont = {"key": "cont", "variants": ["a", "b"], "objective": {"reward": "continuous"}}
    assert app.admin.post("/v1/flags", json=cont).status_code == 201
    good = {"flag": "bin", "version": 1, "arm": 0, "count": 1, "sum": 1, "sum_sq": 1, "ids": [did(0, 1)]}

    def post(*rows: dict[str, Any]) -> httpx.Response:
        body = {"batch_id": uuid.uuid4().hex, "exposures": [], "rewards": list(rows)}
        r: httpx.Response = app.sdk.post("/v1/events", json=body)
        return r

    r = post(good, {**good, "flag": "cont", "sum": 2.5, "sum_sq": 6.25})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rewards[1].ids"
    r = post(good, {**good, "ids": ["0123456789ABCDEF"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rewards[1].ids[0]"
    r = post({**good, "sum": 0, "sum_sq": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rewards[0].ids"
    assert "at most sum (0) ids" in r.json()["error"]["message"]
    many = [{**good, "count": 5000, "sum": 5000, "sum_sq": 5000, "ids": [did(i, u) for u in range(5000)]}
            for i in range(3)]  # fmt: skip
    r = post(*many)
    assert r.status_code == 413 and "at most 10000 decision ids" in r.json()["error"]["message"]
    # Nothing of the refused batches was counted, their ids included: the first good id counts now.
    assert post(good).json()["duplicates"] == 0
    assert post(good).json()["duplicates"] == 1


# -- properties -------------------------------------------------------------------------------------------


@st.composite
def traffic(draw: st.DrawFn, legacy: bool) -> tuple[list[int], list[list[str]], list[list[dict[str, Any]]]]:
    """Two arms' exposures, their converting decision ids, and the batches of reward rows that deliver
    every conversion 1..4 times (inside one row, across rows and batches, in any order); with ``legacy``
    some rows come without their ids."""
    units = [draw(st.integers(1, 40)) for _ in range(2)]
    converting = [[did(arm, u) for u in range(units[arm]) if draw(st.booleans())] for arm in range(2)]
    sends = [(arm, d) for arm in range(2) for d in converting[arm] for _ in range(draw(st.integers(1, 4)))]
    sends = draw(st.permutations(sends))
    cuts = sorted(draw(st.lists(st.integers(0, len(sends)), max_size=6)))
    batches = []
    for lo, hi in zip([0, *cuts], [*cuts, len(sends)], strict=True):
        rows = []
        part = sends[lo:hi]
        for arm in range(2):
            ids = [d for a, d in part if a == arm]
            while ids:  # one arm may take several rows of one batch (another process's flush)
                take = draw(st.integers(1, len(ids)))
                chunk, ids = ids[:take], ids[take:]
                row: dict[str, Any] = {"version": 1, "arm": arm, "count": len(chunk), "sum": len(chunk),
                                       "sum_sq": len(chunk)}  # fmt: skip
                if not (legacy and draw(st.booleans())):
                    row["ids"] = chunk
                rows.append(row)
        batches.append(rows)
    return units, converting, batches


def _send(app: Any, key: str, units: list[int], batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    assert app.admin.post("/v1/flags", json={"key": key, "variants": ["a", "b"]}).status_code == 201
    exposures = [{"flag": key, "version": 1, "arm": arm, "count": n} for arm, n in enumerate(units)]
    for rows in [[], *batches]:
        body = {"batch_id": uuid.uuid4().hex, "exposures": exposures if not rows else [],
                "rewards": [{**r, "flag": key} for r in rows]}  # fmt: skip
        assert app.sdk.post("/v1/events", json=body).status_code == 202
        exposures = []
    stats: list[dict[str, Any]] = app.admin.get(f"/v1/flags/{key}").json()["stats"]
    return stats


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=traffic(legacy=False))
def test_with_ids_every_rate_is_the_distinct_conversion_rate(app: Any, data: Any) -> None:
    units, converting, batches = data
    stats = _send(app, "p-" + uuid.uuid4().hex[:12], units, batches)
    for arm in range(2):
        assert stats[arm]["sum"] == len(converting[arm])
        assert stats[arm]["mean"] == pytest.approx(len(converting[arm]) / units[arm])
        assert 0.0 <= stats[arm]["mean"] <= 1.0 and stats[arm]["clamped"] == 0.0


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=traffic(legacy=True))
def test_any_mix_with_rows_without_ids_stays_within_0_and_1(app: Any, data: Any) -> None:
    units, converting, batches = data
    stats = _send(app, "q-" + uuid.uuid4().hex[:12], units, batches)
    for arm in range(2):
        assert 0.0 <= stats[arm]["mean"] <= 1.0
        assert len(converting[arm]) <= stats[arm]["sum"] <= units[arm]
        assert stats[arm]["sum"] + stats[arm]["clamped"] >= len(converting[arm])
