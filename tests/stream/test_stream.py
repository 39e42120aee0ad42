"""``/v1/stream`` against the real server: events, keep-alives, several processes on one database,
the SDK's fallback to polling and its recovery, and a prompt shutdown with streams open."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import banditflags
from banditflags import _sync

FLAG = {
    "key": "pay-button",
    "variants": ["a", "b"],
    "control": "a",
    "policy": {"name": "fixed", "weights": [0, 1]},
}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds (a functional bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, str, str | None]]:
    """(type, data, id) of each event or comment of an open stream response."""
    from banditflags._sse import parse_sse, split_lines

    for e in parse_sse(split_lines(resp.iter_text())):
        yield e.type, e.data, e.id


@pytest.fixture
def sdk_client() -> Iterator[Callable[..., banditflags.Client]]:
    made: list[banditflags.Client] = []

    def make(url: str, key: str, **kwargs: Any) -> banditflags.Client:
        kwargs.setdefault("flush_interval", 60.0)
        client = banditflags.Client(url, key, **kwargs)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close(timeout=2.0)


def test_stream_sends_config_on_connect_then_on_every_change(server: Any, admin: httpx.Client) -> None:
    assert admin.post("/v1/flags", json=FLAG).status_code == 201
    headers = {"Authorization": f"Bearer {server.sdk_key}"}
    with httpx.stream("GET", server.url + "/v1/stream", headers=headers, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        events = sse_events(resp)
        kind, data, ident = next(events)
        first = json.loads(data)
        assert kind == "config" and ident == str(first["revision"])
        assert [f["key"] for f in first["flags"]] == ["pay-button"]
        assert first["flags"][0]["state"] == "running"
        # The same body GET /v1/config serves for that revision.
        assert admin.get("/v1/config").json()["flags"] == first["flags"]
        assert admin.patch("/v1/flags/pay-button", json={"state": "killed"}).status_code == 200
        kind, data, ident = next(e for e in events if e[0] == "config")
        second = json.loads(data)
        assert second["revision"] > first["revision"] and second["flags"][0]["state"] == "killed"


def test_last_event_id_up_to_date_and_keep_alive(live_server: Callable[..., Any]) -> None:
    server = live_server(env={"BANDITFLAGS_STREAM_HEARTBEAT": "0.2"})
    with server.client("sdk") as sdk:
        revision = sdk.get("/v1/config").json()["revision"]
        headers = {"Last-Event-ID": str(revision)}
        with sdk.stream("GET", "/v1/stream", headers=headers) as resp:
            events = sse_events(resp)
            assert next(events) == ("comment", "up to date", None)
            assert next(events) == ("comment", "keep-alive", None)


def test_stream_needs_a_key(server: Any) -> None:
    assert httpx.get(server.url + "/v1/stream", timeout=10).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert httpx.get(server.url + "/v1/stream", headers=bad, timeout=10).status_code == 401


def test_max_streams_zero_refuses_with_503(live_server: Callable[..., Any]) -> None:
    server = live_server(env={"BANDITFLAGS_MAX_STREAMS": "0"})
    with server.client("sdk") as sdk:
        resp = sdk.get("/v1/stream")
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"
        assert resp.headers["retry-after"]


def _two_servers_one_database(
    live_server: Callable[..., Any], db: str | None, tmp_path: Any
) -> tuple[Any, Any]:
    db = db or str(tmp_path / "shared.db")
    a = live_server(db=db)
    b = live_server(db=db, admin_key=a.admin_key, sdk_key=a.sdk_key)
    return a, b


def _sees_change_from_the_other_process(a: Any, b: Any, make: Callable[..., banditflags.Client]) -> None:
    with b.client("admin") as admin_b:
        assert admin_b.post("/v1/flags", json=FLAG).status_code == 201
        # Polling would take an hour: only the stream can bring the change in time.
        client = make(a.url, a.sdk_key, refresh_interval=3600.0)
        assert client.wait_until_ready(10.0)
        wait_for(lambda: client.variant("pay-button", "u1") == "b", 10.0, "the flag from server B")
        wait_for(lambda: client.stats().stream_connected, 10.0, "the stream to server A")
        assert admin_b.patch("/v1/flags/pay-button", json={"state": "killed"}).status_code == 200
        wait_for(lambda: client.variant("pay-button", "u1") == "a", 5.0, "the kill made through server B")
        assert client.stats().stream_events >= 1
        assert admin_b.patch("/v1/flags/pay-button", json={"state": "running"}).status_code == 200
        wait_for(lambda: client.variant("pay-button", "u1") == "b", 5.0, "the un-kill made through server B")


def test_change_through_another_process_reaches_the_stream_sqlite(
    live_server: Callable[..., Any], sdk_client: Callable[..., banditflags.Client], tmp_path: Any
) -> None:
    a, b = _two_servers_one_database(live_server, None, tmp_path)
    _sees_change_from_the_other_process(a, b, sdk_client)


@pytest.mark.postgres
def test_change_through_another_process_reaches_the_stream_postgres(
    live_server: Callable[..., Any], sdk_client: Callable[..., banditflags.Client], pg_url: str, tmp_path: Any
) -> None:
    a, b = _two_servers_one_database(live_server, pg_url, tmp_path)
    with a.client("admin") as admin:
        admin.delete("/v1/flags/pay-button")  # the session's PostgreSQL database is shared by tests
    _sees_change_from_the_other_process(a, b, sdk_client)


def test_sdk_falls_back_to_polling_and_recovers_the_stream(
    live_server: Callable[..., Any],
    sdk_client: Callable[..., banditflags.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short reconnection backoff so that recovery happens within the test's bounds.
    monkeypatch.setattr(_sync, "STREAM_BACKOFF", 0.2)
    monkeypatch.setattr(_sync, "STREAM_MAX_BACKOFF", 0.5)
    # The 503 says "Retry-After: 30", which the client honours (tests/faults): cap it for this test.
    monkeypatch.setattr(_sync, "MAX_RETRY_AFTER", 0.5)
    server = live_server(env={"BANDITFLAGS_MAX_STREAMS": "0"})  # the stream endpoint fails (503)
    with server.client("admin") as admin:
        assert admin.post("/v1/flags", json=FLAG).status_code == 201
    client = sdk_client(server.url, server.sdk_key, refresh_interval=0.3)
    assert client.wait_until_ready(10.0)
    wait_for(
        lambda: client.stats().stream_connects == 0 and "503" in (client.stats().last_error or ""),
        10.0,
        "a refused stream",
    )
    with server.client("admin") as admin:
        assert admin.patch("/v1/flags/pay-button", json={"state": "killed"}).status_code == 200
    wait_for(lambda: client.variant("pay-button", "u1") == "a", 10.0, "the kill, by polling")
    st = client.stats()
    assert not st.stream_connected and st.stream_events == 0

    # The stream comes back: same port, database and keys, streams allowed again.
    server.extra_env.pop("BANDITFLAGS_MAX_STREAMS")
    server.restart()
    wait_for(lambda: client.stats().stream_connected, 20.0, "the stream to reconnect")
    before = client.stats().stream_events
    with server.client("admin") as admin:
        assert admin.patch("/v1/flags/pay-button", json={"state": "running"}).status_code == 200
    wait_for(lambda: client.variant("pay-button", "u1") == "b", 10.0, "the un-kill")
    wait_for(lambda: client.stats().stream_events > before, 5.0, "the un-kill to come by the stream")


def test_values_with_unicode_line_breaks_reach_the_sdk_by_the_stream(
    server: Any, admin: httpx.Client, sdk_client: Callable[..., banditflags.Client]
) -> None:
    """The server's JSON keeps U+2028, U+2029 and U+0085 raw (ensure_ascii=False): inside the one data line
    of a config event, they must not end the line (they did, and every such config event was rejected)."""
    value = "one\u2028two\u2029three\x85four"
    flag = dict(FLAG, variants=[{"key": "a", "value": "A"}, {"key": "b", "value": value}])
    assert admin.post("/v1/flags", json=flag).status_code == 201
    client = sdk_client(server.url, server.sdk_key, refresh_interval=3600.0)  # only the stream in time
    assert client.wait_until_ready(10.0)
    wait_for(lambda: client.stats().stream_connected, 10.0, "the stream")
    assert admin.patch("/v1/flags/pay-button", json={"state": "killed"}).status_code == 200
    wait_for(lambda: client.variant("pay-button", "u1") == "a", 5.0, "the kill, by the stream")
    assert admin.patch("/v1/flags/pay-button", json={"state": "running"}).status_code == 200
    wait_for(lambda: client.decide("pay-button", "u1").value == value, 5.0, "the un-kill, by the stream")
    st = client.stats()
    assert st.stream_events >= 2 and st.config_errors == 0


def test_shutdown_with_open_streams_is_prompt(
    live_server: Callable[..., Any], sdk_client: Callable[..., banditflags.Client]
) -> None:
    server = live_server()
    clients = [sdk_client(server.url, server.sdk_key, refresh_interval=3600.0) for _ in range(3)]
    for c in clients:
        assert c.wait_until_ready(10.0)
    for c in clients:
        wait_for(lambda c=c: c.stats().stream_connected, 10.0, "the streams to open")
    started = time.monotonic()
    assert server.stop(timeout=30.0) == 0
    # uvicorn would hold open streams for its whole graceful-shutdown timeout (10 s) before cancelling them:
    # the server ends them first. This bounds behaviour (the timeout is not hit), not speed.
    assert time.monotonic() - started < 10.0
    for c in clients:
        wait_for(lambda c=c: not c.stats().stream_connected, 10.0, "the clients to see the stream end")
