"""The real server over HTTP: auth on every route, config ETag/304, events, limits, restart, logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

ADMIN_ROUTES = [
    ("GET", "/v1/flags"),
    ("POST", "/v1/flags"),
    ("GET", "/v1/flags/btn"),
    ("PATCH", "/v1/flags/btn"),
    ("DELETE", "/v1/flags/btn"),
    ("GET", "/v1/flags/btn/history"),
    ("GET", "/v1/flags/btn/stats"),
    ("POST", "/v1/flags/btn/recompute"),
]


def _create(admin: httpx.Client, key: str = "btn") -> dict[str, Any]:
    r = admin.post("/v1/flags", json={"key": key, "variants": ["a", "b", "c"]})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _batch(
    batch_id: str, rows: list[dict[str, Any]], rewards: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "sent_at": "2026-01-01T00:00:00Z",
        "sdk": "test/1",
        "exposures": rows,
        "rewards": rewards or [],
    }


@pytest.fixture
def flag(admin: httpx.Client) -> Iterator[dict[str, Any]]:
    yield _create(admin)


def test_keys_and_roles(server: Any, flag: dict[str, Any]) -> None:
    with server.client("sdk") as sdk:
        for method, path in ADMIN_ROUTES:
            r = sdk.request(method, path, json={})
            assert r.status_code == 403, (method, path)
            assert r.json()["error"]["code"] == "forbidden"
        assert sdk.get("/v1/config").status_code == 200
    for method, path in [*ADMIN_ROUTES, ("GET", "/v1/config"), ("POST", "/v1/events")]:
        r = httpx.request(method, server.url + path, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path)
        r = httpx.request(method, server.url + path, json={}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["revision"] >= 1
    # The flag survived all of it.
    with server.client("admin") as admin:
        assert admin.get("/v1/flags/btn").json()["version"] == 1


def test_config_etag_and_304(server: Any, admin: httpx.Client, sdk: httpx.Client) -> None:
    empty = sdk.get("/v1/config")
    assert empty.status_code == 200 and empty.json()["flags"] == [] and empty.headers["etag"] == '"0"'
    _create(admin)
    r = sdk.get("/v1/config")
    etag = r.headers["etag"]
    assert etag == '"1"' and r.headers["cache-control"] == "no-cache"
    body = r.json()
    assert body["schema"] == 1 and body["revision"] == 1
    f = body["flags"][0]
    assert set(f) >= {
        "key",
        "salt",
        "state",
        "exploration",
        "version",
        "variants",
        "control",
        "weights",
        "table",
        "objective",
        "policy",
    }
    assert sum(run for _, run in f["table"]) == 10_000
    again = sdk.get("/v1/config", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and again.content == b""
    admin.patch("/v1/flags/btn", json={"state": "killed"})
    changed = sdk.get("/v1/config", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] == '"2"'
    assert changed.json()["flags"][0]["state"] == "killed"


def test_events_are_idempotent_per_batch(
    server: Any, admin: httpx.Client, sdk: httpx.Client, flag: dict[str, Any]
) -> None:
    rows = [
        {"flag": "btn", "version": 1, "arm": 1, "count": 3},
        {"flag": "btn", "version": 1, "arm": 1, "count": 2},
    ]
    rewards = [{"flag": "btn", "version": 1, "arm": 1, "count": 1, "sum": 1.0, "sum_sq": 1.0}]
    first = sdk.post("/v1/events", json=_batch("batch-0001", rows, rewards))
    assert first.status_code == 202
    assert first.json() == {
        "batch_id": "batch-0001",
        "duplicate": False,
        "exposures": 2,
        "rewards": 1,
        "ignored": [],
        "duplicates": 0,
    }
    again = sdk.post("/v1/events", json=_batch("batch-0001", rows, rewards))
    assert again.status_code == 202 and again.json()["duplicate"] is True
    stats = admin.get("/v1/flags/btn").json()["stats"]
    assert [s["n"] for s in stats] == [0, 5, 0] and stats[1]["rewards"] == 1 and stats[1]["sum"] == 1.0


def test_unknown_flags_are_ignored_and_listed(
    admin: httpx.Client, sdk: httpx.Client, flag: dict[str, Any]
) -> None:
    rows = [
        {"flag": "ghost", "version": 1, "arm": 0, "count": 1},
        {"flag": "btn", "version": 7, "arm": 0, "count": 1},
        {"flag": "btn", "version": 1, "arm": 0, "count": 4},
    ]
    r = sdk.post("/v1/events", json=_batch("batch-0002", rows))
    assert r.status_code == 202
    assert r.json()["ignored"] == [
        {"field": "exposures[0]", "reason": "unknown flag"},
        {"field": "exposures[1]", "reason": "unknown version"},
    ]
    assert r.json()["exposures"] == 1
    assert admin.get("/v1/flags/btn").json()["stats"][0]["n"] == 4


@pytest.mark.parametrize(
    ("rows", "rewards", "field"),
    [
        ([{"flag": "btn", "version": 1, "arm": 3, "count": 1}], [], "exposures[1].arm"),
        ([{"flag": "btn", "version": 1, "arm": 0, "count": "1"}], [], "exposures[1].count"),
        ([], [{"flag": "btn", "version": 1, "arm": 0, "count": 1, "sum": 2, "sum_sq": 4}], "rewards[0].sum"),
    ],
)
def test_malformed_rows_reject_the_batch(
    admin: httpx.Client,
    sdk: httpx.Client,
    flag: dict[str, Any],
    rows: list[Any],
    rewards: list[Any],
    field: str,
) -> None:
    good = {"flag": "btn", "version": 1, "arm": 0, "count": 9}
    r = sdk.post("/v1/events", json=_batch("batch-0003", [good, *rows], rewards))
    assert r.status_code == 422 and r.json()["error"]["field"] == field
    assert admin.get("/v1/flags/btn").json()["stats"][0]["n"] == 0
    # The id was not used up: the corrected batch counts.
    assert sdk.post("/v1/events", json=_batch("batch-0003", [good])).json()["duplicate"] is False


def test_body_limits(server: Any, admin: httpx.Client, sdk: httpx.Client, flag: dict[str, Any]) -> None:
    big = b'{"batch_id": "batch-0004", "sdk": "' + b"x" * (1024 * 1024) + b'"}'
    r = sdk.post("/v1/events", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is counted while reading
        yield b'{"batch_id": "batch-0005", "sdk": "'
        for _ in range(40):
            yield b"y" * 32768
        yield b'"}'

    r = sdk.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = sdk.post("/v1/events", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = sdk.post("/v1/events", content=b"{}")
    assert r.status_code == 415
    r = admin.post(
        "/v1/flags",
        content=b'{"key": "x", "variants": ["' + b"z" * 2_000_000 + b'"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert [f["key"] for f in admin.get("/v1/flags").json()["flags"]] == ["btn"]
    rows = [{"flag": "btn", "version": 1, "arm": 0, "count": 1}] * 10_001
    assert sdk.post("/v1/events", json=_batch("batch-0006", rows)).status_code == 413
    assert admin.get("/v1/flags/btn").json()["stats"][0]["n"] == 0


def test_restart_after_sigkill_keeps_everything(
    server: Any, admin: httpx.Client, sdk: httpx.Client, flag: dict[str, Any]
) -> None:
    rows = [{"flag": "btn", "version": 1, "arm": i, "count": 1000} for i in range(3)]
    rewards = [{"flag": "btn", "version": 1, "arm": 2, "count": 300, "sum": 300, "sum_sq": 300}]
    assert sdk.post("/v1/events", json=_batch("batch-0007", rows, rewards)).status_code == 202
    assert admin.post("/v1/flags/btn/recompute").status_code == 200
    admin.patch("/v1/flags/btn", json={"state": "frozen"})
    before = admin.get("/v1/flags/btn").json()
    history = admin.get("/v1/flags/btn/history").json()
    config = sdk.get("/v1/config").json()
    server.kill()
    server.restart()
    after = admin.get("/v1/flags/btn").json()
    assert [s["n"] for s in after["stats"]] == [1000, 1000, 1000]
    for name in ("version", "weights", "salt", "state", "bandit_weights"):
        assert after[name] == before[name]
    assert admin.get("/v1/flags/btn/history").json() == history
    again = sdk.get("/v1/config").json()
    assert again["revision"] == config["revision"] and again["flags"] == config["flags"]
    # The replayed batch is still known after the crash.
    assert sdk.post("/v1/events", json=_batch("batch-0007", rows, rewards)).json()["duplicate"] is True


def test_keys_never_reach_the_log(
    server: Any, admin: httpx.Client, sdk: httpx.Client, flag: dict[str, Any]
) -> None:
    sdk.get("/v1/config")
    sdk.get("/v1/flags")  # 403
    httpx.get(server.url + "/v1/config", headers={"Authorization": "Bearer wrong-key-123"})
    admin.get("/v1/flags/btn")
    server.stop()
    log = server.log()
    assert "GET /v1/config" in log  # the access log is on, with paths only
    for secret in (server.admin_key, server.sdk_key, "wrong-key-123"):
        assert secret not in log


def test_a_second_process_sees_changes_within_the_poll_interval(
    live_server: Any, server: Any, admin: httpx.Client
) -> None:
    other = live_server(db=server.db, admin_key=server.admin_key, sdk_key=server.sdk_key)
    with other.client("sdk") as sdk2:
        etag = sdk2.get("/v1/config").headers["etag"]
        _create(admin, "shared")
        # The other process re-reads the revision at most every stream_poll (0.1 s) seconds.
        deadline = time.monotonic() + 5.0
        while (r := sdk2.get("/v1/config", headers={"If-None-Match": etag})).status_code == 304:
            assert time.monotonic() < deadline, "the change never reached the other process"
            time.sleep(0.02)
        assert r.status_code == 200 and [f["key"] for f in r.json()["flags"]] == ["shared"]


def test_a_change_through_this_process_is_served_at_once(server: Any, admin: httpx.Client, sdk: Any) -> None:
    etag = sdk.get("/v1/config").headers["etag"]
    assert sdk.get("/v1/config", headers={"If-None-Match": etag}).status_code == 304  # the gate is warm
    _create(admin, "local")
    r = sdk.get("/v1/config", headers={"If-None-Match": etag})
    assert r.status_code == 200 and [f["key"] for f in r.json()["flags"]] == ["local"]


def test_a_key_revoked_through_another_process_stops_working_here(live_server: Any) -> None:
    first = live_server(env={"BANDITFLAGS_KEY_RECHECK": "0.2"})
    with first.client("sdk") as sdk:
        assert sdk.get("/v1/config").status_code == 200  # known and cached by the first process
        # A second process on the same database rotates the keys: the first's sdk key is revoked.
        live_server(db=first.db)
        deadline = time.monotonic() + 10.0
        while (status := sdk.get("/v1/config").status_code) == 200:
            assert time.monotonic() < deadline, "the revoked key kept working"
            time.sleep(0.05)
        assert status == 401
