"""PostgreSQL LISTEN/NOTIFY between replicas: a change committed through one replica reaches the
streams and config polls of another at once, although that replica polls the revision only every
few seconds; with the listener down, polling is fast again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from banditflags_server.api.stream import StreamHub
from banditflags_server.storage.notify import RevisionListener

FLAG = {
    "key": "notify-button",
    "variants": ["a", "b"],
    "control": "a",
    "policy": {"name": "fixed", "weights": [0, 1]},
}


def _wait(cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"not within {timeout} s")


@pytest.mark.postgres
def test_a_change_through_one_replica_reaches_another_by_notify(
    live_server: Callable[..., Any], pg_url: str
) -> None:
    import banditflags

    # Slow polling on both: 2 s when the listener is down, 30 s while it listens.
    env = {"BANDITFLAGS_STREAM_POLL": "2", "BANDITFLAGS_LISTEN_POLL": "30"}
    a = live_server(db=pg_url, env=env)
    b = live_server(db=pg_url, env=env, admin_key=a.admin_key, sdk_key=a.sdk_key)
    with a.client("admin") as admin_a, b.client("sdk") as sdk_b:
        admin_a.delete("/v1/flags/notify-button")  # the session's database is shared by tests
        assert admin_a.post("/v1/flags", json=FLAG).status_code == 201
        _wait(lambda: any(f["key"] == "notify-button" for f in sdk_b.get("/v1/config").json()["flags"]), 5)
        client = banditflags.Client(b.url, b.sdk_key, refresh_interval=3600.0, flush_interval=60.0)
        try:
            assert client.wait_until_ready(10.0)
            _wait(lambda: client.stats().stream_connected and client.variant("notify-button", "u") == "b", 10)
            worst = 0.0
            for state, want in (("killed", "a"), ("running", "b"), ("killed", "a"), ("running", "b")):
                t0 = time.monotonic()
                assert admin_a.patch("/v1/flags/notify-button", json={"state": state}).status_code == 200
                _wait(lambda want=want: client.variant("notify-button", "u") == want, 1.5)
                worst = max(worst, time.monotonic() - t0)
                # A config poll on B sees it too, long before its 30 s (or 2 s) timed read.
                flags = {f["key"]: f for f in sdk_b.get("/v1/config").json()["flags"]}
                assert flags["notify-button"]["state"] == state
            assert worst < 1.5  # polling alone would take 2 s or more
        finally:
            client.close(timeout=2.0)


def test_the_hub_polls_fast_while_the_listener_is_down() -> None:
    hub = StreamHub(poll=0.1, heartbeat=15.0, max_streams=10, listen_poll=5.0)
    assert hub.poll == 0.1  # no listener (SQLite)
    listener = RevisionListener("postgresql://nobody@127.0.0.1:1/none", lambda: None)
    hub.listener = listener
    assert not listener.healthy and hub.poll == 0.1  # never connected
    listener.healthy = True
    assert hub.poll == 5.0
    writes = hub.writes
    hub.notified()
    assert hub.writes == writes + 1  # GET /v1/config re-reads the revision after a notification


@pytest.mark.postgres
def test_the_listener_reconnects_and_calls_back(pg_url: str) -> None:
    import psycopg

    from banditflags_server.storage.notify import CHANNEL, libpq_conninfo

    calls: list[float] = []
    listener = RevisionListener(
        pg_url.replace("postgresql://", "postgresql+psycopg://"), lambda: calls.append(1)
    )
    listener.start()
    try:
        _wait(lambda: listener.healthy and len(calls) == 1, 10)  # one call on connecting
        with psycopg.connect(libpq_conninfo(pg_url), autocommit=True) as conn:
            conn.execute(f"NOTIFY {CHANNEL}")
            _wait(lambda: len(calls) == 2, 5)
            # Cut the listener's connection from the server side: it reconnects and calls back once.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        _wait(lambda: len(calls) >= 3 and listener.healthy, 10)
    finally:
        listener.stop()
