"""ConfigSync: ETag/304, backoff with jitter, bad payloads never replace the last good snapshot."""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx
import pytest

from banditflags._config import ConfigSnapshot
from banditflags._sync import ConfigSync, backoff_delay, jittered


class FakeWaiter:
    """Records the delays the poll loop asks for, instead of sleeping; stops after ``limit`` waits."""

    def __init__(self, limit: int) -> None:
        self.delays: list[float] = []
        self.limit = limit

    def is_set(self) -> bool:
        return len(self.delays) >= self.limit

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.delays.append(timeout)
        return self.is_set()


def make_sync(published: list[ConfigSnapshot], confirmed: list[int], interval: float = 1.0) -> ConfigSync:
    return ConfigSync(
        "http://bf.test/v1/config",
        "bf_sdk_test",
        interval,
        published.append,
        lambda: confirmed.append(1),
        logging.getLogger("test"),
        random.Random(7),
    )


def test_etag_and_304(server: Any) -> None:
    published: list[ConfigSnapshot] = []
    confirmed: list[int] = []
    sync = make_sync(published, confirmed)
    http = httpx.Client(transport=server.transport)
    assert sync.fetch(http, 1.0)
    assert sync.etag == '"1"' and len(published) == 1
    assert "if-none-match" not in server.config_requests[0].headers
    assert sync.fetch(http, 1.0)
    assert server.config_requests[1].headers["if-none-match"] == '"1"'
    assert len(published) == 1 and confirmed == [1]
    server.set_config({**server.config, "revision": 2})
    assert sync.fetch(http, 1.0)
    assert len(published) == 2 and published[-1].revision == 2 and sync.etag == '"2"'


def test_backoff_grows_capped_and_resets(server: Any) -> None:
    server.down = True
    sync = make_sync([], [], interval=1.0)
    waiter = FakeWaiter(limit=9)
    sync.run(lambda: httpx.Client(transport=server.transport), waiter, 1.0)
    d = waiter.delays
    # failure n waits base * 2**(n-1) (capped at 60 s) times a jitter factor in [0.5, 1)
    for n, delay in enumerate(d, start=1):
        raw = min(60.0, 2.0 ** (n - 1))
        assert raw * 0.5 <= delay < raw
    assert max(d) < 60.0 and d[-1] >= 30.0
    assert sync.failures == 9 and sync.errors == 9
    server.down = False
    waiter2 = FakeWaiter(limit=3)
    sync.run(lambda: httpx.Client(transport=server.transport), waiter2, 1.0)
    assert all(0.9 <= x <= 1.1 for x in waiter2.delays)  # back to the jittered poll interval
    assert sync.failures == 0


def test_backoff_and_jitter_helpers() -> None:
    rng = random.Random(1)
    assert all(0.5 <= backoff_delay(1, 1.0, 60.0, rng) < 1.0 for _ in range(100))
    assert all(backoff_delay(50, 1.0, 60.0, rng) < 60.0 for _ in range(100))
    xs = [jittered(5.0, rng) for _ in range(1000)]
    assert min(xs) >= 4.5 and max(xs) <= 5.5 and max(xs) - min(xs) > 0.5


BAD_BODIES: list[tuple[str, Any]] = [
    ("not json", b"<html>oops</html>"),
    ("json list", b"[]"),
    ("schema 2", {"schema": 2, "revision": 3, "flags": []}),
    ("bad table", "bad-table"),
    ("bad flag key", "bad-key"),
    ("truncated", b'{"schema": 1, "revision": 3, "fla'),
]


@pytest.mark.parametrize(("name", "body"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_payload_keeps_last_good(
    server: Any, build: Any, name: str, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    published: list[ConfigSnapshot] = []
    sync = make_sync(published, [])
    http = httpx.Client(transport=server.transport)
    assert sync.fetch(http, 1.0)
    if body == "bad-table":
        body = build.config(build.flag(table=[[0, 10]]), revision=3)
    elif body == "bad-key":
        body = build.config(build.flag("Nope"), revision=3)

    def respond(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"ETag": '"3"'})
        return httpx.Response(200, json=body, headers={"ETag": '"3"'})

    server.config_override = respond
    with caplog.at_level(logging.WARNING, logger="test"):
        assert not sync.fetch(http, 1.0)
        assert not sync.fetch(http, 1.0)
    assert len(published) == 1 and published[0].revision == 1
    assert sync.etag == '"1"'  # the bad revision's ETag is not remembered
    assert sync.bad_payloads == 2 and "rejected config payload" in (sync.last_error or "")
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1  # logged once
    assert "bf_sdk_test" not in caplog.text


@pytest.mark.parametrize("status", [401, 403, 404, 500, 503])
def test_http_errors_are_failures(server: Any, status: int) -> None:
    published: list[ConfigSnapshot] = []
    sync = make_sync(published, [])
    server.config_override = lambda request: httpx.Response(status, json={"error": {"code": "x"}})
    assert not sync.fetch(httpx.Client(transport=server.transport), 1.0)
    assert published == [] and str(status) in (sync.last_error or "")


def test_304_without_etag_is_not_a_confirmation(server: Any) -> None:
    confirmed: list[int] = []
    sync = make_sync([], confirmed)
    server.config_override = lambda request: httpx.Response(304)
    assert not sync.fetch(httpx.Client(transport=server.transport), 1.0)
    assert confirmed == []


def test_retry_after_sets_the_next_poll_and_holds_refresh(server: Any) -> None:
    """A 429 with ``Retry-After: 30`` (poll interval 1 s): the next poll waits >= 30 s, and a fetch
    before then (``refresh()``) sends nothing."""
    sync = make_sync([], [])
    calls: list[int] = []

    def throttled(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, headers={"Retry-After": "30"})

    server.config_override = throttled
    http = httpx.Client(transport=server.transport)
    waiter = FakeWaiter(limit=1)
    sync.run(lambda: http, waiter, 1.0)
    assert 30.0 <= waiter.delays[0] <= 33.0 + 0.1 and sync.pushback.throttled == 1
    assert not sync.fetch(http, 1.0) and len(calls) == 1  # held: no request
    sync.hold_until = 0.0
    server.config_override = None
    assert sync.fetch(http, 1.0) and len(calls) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_waits_minutes_and_is_said_once(
    server: Any, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    sync = make_sync([], [], interval=1.0)
    server.config_override = lambda request: httpx.Response(status, json={"error": {"code": "x"}})
    http = httpx.Client(transport=server.transport)
    delays = []
    with caplog.at_level(logging.WARNING, logger="test"):
        for _ in range(3):
            sync.hold_until = 0.0  # as if the wait had passed
            delays.append(sync.next_delay(sync.fetch(http, 1.0)))
    # 30-60 s, 60-120 s, 120-240 s (capped at 300): not 0.5-1, 1-2, 2-4 s as for a server that is down
    assert 30.0 <= delays[0] < 60.0 and 60.0 <= delays[1] < 120.0 and 120.0 <= delays[2] < 240.0
    assert sync.pushback.auth_refusals == 3 and sync.errors == 3
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "refused the sdk key" in said[0] and "BANDITFLAGS_SDK_KEY" in said[0]
    assert "bf_sdk_test" not in caplog.text
