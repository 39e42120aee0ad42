"""End to end: the real server (uvicorn subprocess, SQLite file) and the real SDK over loopback HTTP.

One flag goes through its whole life: 20,000 decisions, rewards favouring one variant, a recompute that
moves the weights with minimal movement, kill and un-kill, freeze, the exploration throttle, a replayed
batch, malformed payloads, an sdk key on admin routes, and a SIGKILL + restart that keeps everything.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import mmh3
import pytest

from banditflags import Client

FLAG = "checkout-button"
VARIANTS = ["blue", "green", "orange"]
UNITS = [f"user-{i}" for i in range(20_000)]
TRUE_RATES = [0.04, 0.05, 0.20]  # orange is the clear winner


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _table(flag: dict[str, Any]) -> bytes:
    """Decode a config flag's RLE table independently of the SDK and the server."""
    out = bytearray()
    for arm, run in flag["table"]:
        out += bytes([arm]) * run
    assert len(out) == 10_000
    return bytes(out)


def _bucket(salt: str, unit: str) -> int:
    return (mmh3.hash(f"{salt}.{unit}".encode(), 0, signed=False) * 10_000) >> 32


def _config_flag(server: Any) -> dict[str, Any]:
    config = httpx.get(f"{server.url}/v1/config", headers=_auth(server.sdk_key)).json()
    return next(f for f in config["flags"] if f["key"] == FLAG)


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def server(live_server: Any) -> Iterator[Any]:
    handle = live_server()
    yield handle
    handle.stop()


@pytest.fixture
def admin(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=_auth(server.admin_key), timeout=30.0) as client:
        yield client


def _create_flag(admin: httpx.Client) -> dict[str, Any]:
    response = admin.post(
        "/v1/flags",
        json={
            "key": FLAG,
            "variants": [{"key": k, "value": f"#{i}"} for i, k in enumerate(VARIANTS)],
            "control": "blue",
            "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
            "policy": {"name": "thompson", "floor": 0.01, "burn_in": 100, "max_step": None},
        },
    )
    assert response.status_code == 201, response.text
    flag: dict[str, Any] = response.json()
    return flag


def _arms(client: Client) -> list[int]:
    arms = []
    for unit in UNITS:
        decision = client.decide(FLAG, unit)
        assert decision.arm is not None, decision
        arms.append(decision.arm)
    return arms


def test_bandit_loop_with_minimal_movement_and_controls(server: Any, admin: httpx.Client) -> None:
    created = _create_flag(admin)
    assert created["version"] == 1
    assert created["weights"] == pytest.approx([1 / 3] * 3, abs=1e-4)

    rng = random.Random(7)
    with Client(server.url, sdk_key=server.sdk_key, refresh_interval=0.1, flush_interval=0.2) as client:
        assert client.wait_until_ready(timeout=10.0)
        # 20,000 decisions; rewards favour orange
        before = []
        for unit in UNITS:
            decision = client.decide(FLAG, unit)
            assert decision.reason == "split" and decision.version == 1
            before.append(decision.arm)
            if rng.random() < TRUE_RATES[decision.arm]:
                assert client.track(decision)
        assert client.flush(timeout=20.0)

        flag = admin.get(f"/v1/flags/{FLAG}").json()
        assert sum(st["n"] for st in flag["stats"]) == len(UNITS)
        served = [before.count(i) for i in range(3)]
        assert [st["n"] for st in flag["stats"]] == served

        v1 = _config_flag(server)
        response = admin.post(f"/v1/flags/{FLAG}/recompute")
        assert response.status_code == 200, response.text
        flag = response.json()
        assert flag["version"] == 2
        assert flag["weights"][2] > 0.9, flag["weights"]  # orange leads clearly
        v2 = _config_flag(server)

        # minimal movement: the buckets that changed arm are exactly sum(max(0, old - new))
        old_t, new_t = _table(v1), _table(v2)
        old_c = [old_t.count(i) for i in range(3)]
        new_c = [new_t.count(i) for i in range(3)]
        changed_buckets = {b for b in range(10_000) if old_t[b] != new_t[b]}
        assert len(changed_buckets) == sum(max(0, o - n) for o, n in zip(old_c, new_c, strict=True))
        assert all(
            new_c[old_t[b]] < old_c[old_t[b]] and new_c[new_t[b]] > old_c[new_t[b]] for b in changed_buckets
        )  # only from shrinking arms, only to growing arms

        _wait_for(lambda: client.decide(FLAG, "probe").version == 2)
        after = _arms(client)
        moved_units = [u for u, a, b in zip(UNITS, before, after, strict=True) if a != b]
        salt = v2["salt"]
        expected_moved = [u for u in UNITS if _bucket(salt, u) in changed_buckets]
        assert moved_units == expected_moved
        # no unit left an arm that did not shrink
        for a, b in zip(before, after, strict=True):
            if a != b:
                assert new_c[a] < old_c[a] and new_c[b] > old_c[b]
        print(
            f"\n[e2e] v1 counts {old_c} -> v2 counts {new_c}; buckets moved {len(changed_buckets)} "
            f"(minimum {sum(max(0, o - n) for o, n in zip(old_c, new_c, strict=True))}); units moved "
            f"{len(moved_units)} of {len(UNITS)}"
        )

        # kill: every unit gets the control, not counted; un-kill: every unit back to its arm
        assert admin.patch(f"/v1/flags/{FLAG}", json={"state": "killed"}).status_code == 200
        _wait_for(lambda: client.decide(FLAG, "probe").reason == "disabled")
        assert client.flush(timeout=20.0)
        n_before_kill = sum(st["n"] for st in admin.get(f"/v1/flags/{FLAG}").json()["stats"])
        for unit in UNITS:
            decision = client.decide(FLAG, unit)
            assert (decision.variant, decision.reason) == ("blue", "disabled")
        assert client.flush(timeout=20.0)
        stats = admin.get(f"/v1/flags/{FLAG}").json()["stats"]
        assert sum(st["n"] for st in stats) == n_before_kill  # killed decisions are not exposures
        assert admin.patch(f"/v1/flags/{FLAG}", json={"state": "running"}).status_code == 200
        _wait_for(lambda: client.decide(FLAG, "probe").reason == "split")
        assert _arms(client) == after
        assert _config_flag(server)["version"] == 2  # the kill did not touch the table

        # frozen: recompute is refused and the version stays
        assert admin.patch(f"/v1/flags/{FLAG}", json={"state": "frozen"}).status_code == 200
        assert admin.post(f"/v1/flags/{FLAG}/recompute").status_code == 409
        assert admin.get(f"/v1/flags/{FLAG}").json()["version"] == 2
        assert admin.patch(f"/v1/flags/{FLAG}", json={"state": "running"}).status_code == 200

        # exploration 0: everyone gets the baseline (control), with minimal movement
        flag = admin.patch(f"/v1/flags/{FLAG}", json={"exploration": 0.0}).json()
        assert flag["weights"] == [1.0, 0.0, 0.0]
        _wait_for(lambda: client.decide(FLAG, "probe").version == flag["version"])
        throttled = _arms(client)
        assert set(throttled) == {0}
        assert client.decide(FLAG, "probe").reason == "split"


def _events(sdk_key: str, url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json=body, headers=_auth(sdk_key))


def _n(admin: httpx.Client) -> list[int]:
    return [st["n"] for st in admin.get(f"/v1/flags/{FLAG}").json()["stats"]]


def test_replayed_batch_counts_once_and_malformed_batches_change_nothing(
    server: Any, admin: httpx.Client
) -> None:
    _create_flag(admin)
    batch = {
        "batch_id": uuid.uuid4().hex,
        "sent_at": time.time(),
        "sdk": "test",
        "exposures": [{"flag": FLAG, "version": 1, "arm": 1, "count": 5}],
        "rewards": [{"flag": FLAG, "version": 1, "arm": 1, "count": 2, "sum": 2.0, "sum_sq": 2.0}],
    }
    first = _events(server.sdk_key, server.url, batch)
    assert first.status_code == 202 and first.json()["duplicate"] is False
    again = _events(server.sdk_key, server.url, batch)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert _n(admin) == [0, 5, 0]

    good_row = {"flag": FLAG, "version": 1, "arm": 0, "count": 1}
    malformed: list[tuple[Any, str]] = [
        (
            {**batch, "batch_id": uuid.uuid4().hex, "exposures": [good_row, {**good_row, "arm": 7}]},
            "exposures[1].arm",
        ),
        (
            {**batch, "batch_id": uuid.uuid4().hex, "exposures": [good_row, {**good_row, "count": -1}]},
            "exposures[1].count",
        ),
        (
            {**batch, "batch_id": uuid.uuid4().hex, "rewards": [{**batch["rewards"][0], "sum": "NaN"}]},
            "rewards[0].sum",
        ),
        ({**batch, "batch_id": "x"}, "batch_id"),
    ]
    for body, field in malformed:
        response = _events(server.sdk_key, server.url, body)
        assert 400 <= response.status_code < 500, (field, response.text)
        assert response.json()["error"]["field"] == field
    not_json = httpx.post(
        f"{server.url}/v1/events",
        content=b"{not json",
        headers={**_auth(server.sdk_key), "content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert _n(admin) == [0, 5, 0]


def test_sdk_key_cannot_administer(server: Any) -> None:
    sdk = _auth(server.sdk_key)
    for method, path in [
        ("GET", "/v1/flags"),
        ("POST", "/v1/flags"),
        ("GET", f"/v1/flags/{FLAG}"),
        ("PATCH", f"/v1/flags/{FLAG}"),
        ("DELETE", f"/v1/flags/{FLAG}"),
        ("POST", f"/v1/flags/{FLAG}/recompute"),
        ("GET", f"/v1/flags/{FLAG}/history"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", headers=sdk, json={})
        assert response.status_code == 403, (method, path, response.status_code)
    assert httpx.get(f"{server.url}/v1/config").status_code == 401


def test_restart_after_sigkill_keeps_flags_stats_and_history(server: Any, admin: httpx.Client) -> None:
    _create_flag(admin)
    with Client(server.url, sdk_key=server.sdk_key, flush_interval=0.1) as client:
        assert client.wait_until_ready(timeout=10.0)
        for unit in UNITS[:3000]:
            decision = client.decide(FLAG, unit)
            if decision.arm == 2:
                client.track(decision)
        assert client.flush(timeout=20.0)  # acknowledged = committed
    assert admin.post(f"/v1/flags/{FLAG}/recompute").status_code == 200
    before = admin.get(f"/v1/flags/{FLAG}").json()
    history = admin.get(f"/v1/flags/{FLAG}/history").json()
    server.kill()
    server.restart()
    after = admin.get(f"/v1/flags/{FLAG}").json()
    assert [st["n"] for st in after["stats"]] == [st["n"] for st in before["stats"]]
    assert sum(st["n"] for st in after["stats"]) == 3000
    assert [st["sum"] for st in after["stats"]] == [st["sum"] for st in before["stats"]]
    assert (after["version"], after["weights"], after["salt"]) == (
        before["version"],
        before["weights"],
        before["salt"],
    )
    assert admin.get(f"/v1/flags/{FLAG}/history").json() == history
