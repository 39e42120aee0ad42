"""The SDK under network faults (issue 15): a real client talks to the real server through a
fault-injecting proxy (tests/faults/fault_proxy.py) that adds latency, resets connections, cuts and stalls
the config stream, answers 5xx, 429 with ``Retry-After``, 401, bodies that are not a config, or nothing.

For every fault: ``decide()`` and ``track()`` keep answering at once, the last good config stays, and once
the fault clears the server's counts per (flag, version, arm) are exactly what the client decided and
tracked: nothing lost, nothing counted twice (a retried batch keeps its ``batch_id``). Timing claims are
checked on the proxy's request log (when did the next request arrive?), not on the SDK's calls; the
wall-clock bounds below are generous functional bounds (a call that blocked on the network would take
the whole fault, seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from tests.faults.conftest import Traffic, server_counts, wait_for
from tests.faults.fault_proxy import FaultProxy

import banditflags
from banditflags import _sync

MakeClient = Callable[..., banditflags.Client]
#: A single decide()/track() must return well within this (they take microseconds; one that waited on
#: the network would wait for the whole fault).
AT_ONCE = 0.5
#: flush()/close() must return within their timeout plus this much (thread scheduling on a busy box).
SLACK = 3.0


def settle(client: banditflags.Client, admin: httpx.Client, flag: str, traffic: Traffic) -> None:
    """After the fault: everything is delivered, and the server counted exactly what was decided."""
    assert client.flush(timeout=15.0), client.stats()
    counted = server_counts(admin, flag)
    assert counted == traffic.expected()
    st = client.stats()
    assert st.batches_dropped == 0 and st.decisions_dropped == 0
    n, r = sum(n for n, _ in counted.values()), sum(r for _, r in counted.values())
    # Shown with -rP (docs/reliability.md quotes these): what was decided is what was counted.
    print(
        f"{flag}: decided {traffic.decided}, tracked {sum(traffic.rewards.values())}; server counted {n}, {r}"
    )
    print(
        f"  batches sent {st.batches_sent}, failed attempts {st.batches_failed}, config errors "
        f"{st.config_errors}"
    )


def ready_client(make_client: MakeClient, **kwargs: object) -> banditflags.Client:
    client = make_client(**kwargs)
    assert client.wait_until_ready(10.0)
    return client


def batch_ids(proxy: FaultProxy) -> list[str | None]:
    return [e.batch_id for e in proxy.requests("/v1/events", "POST")]


def streaming_again(proxy: FaultProxy, client: banditflags.Client) -> bool:
    """The client's stream is up on a connection made after the fault cleared."""
    return proxy.requests("/v1/stream")[-1].fault is None and client.stats().stream_connected


# -- latency, resets ------------------------------------------------------------------------------------


def test_latency_everywhere(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    client = ready_client(make_client)
    proxy.set("latency", delay=0.3)
    traffic = Traffic(client, flag)
    traffic.run(300)
    assert traffic.slowest < AT_ONCE
    settle(client, admin, flag, traffic)
    assert any(e.fault == "latency" for e in proxy.requests("/v1/events"))


def test_latency_beyond_the_timeout_retries_the_same_batch(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    """The client gives up (request_timeout 1 s) but the server still gets and commits the batch; the
    retry carries the same batch_id and is not counted again."""
    client = ready_client(make_client, flush_interval=60.0)
    traffic = Traffic(client, flag)
    traffic.run(200)
    proxy.set("latency", paths=("/v1/events",), delay=1.5, times=1)
    settle(client, admin, flag, traffic)
    ids = batch_ids(proxy)
    assert len(ids) >= 2 and ids[0] == ids[1], ids
    wait_for(lambda: server_counts(admin, flag) == traffic.expected(), 5.0, "the late copy to arrive too")
    time.sleep(0.5)  # the delayed copy has been forwarded by now: still counted once
    assert server_counts(admin, flag) == traffic.expected()


def test_reset_before_the_server_sees_it(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    client = ready_client(make_client)
    proxy.set("reset_request")
    traffic = Traffic(client, flag)
    traffic.run(200)
    assert traffic.slowest < AT_ONCE
    wait_for(lambda: len(proxy.requests("/v1/events")) >= 2, 10.0, "event posts to be reset")
    assert client.stats().batches_failed >= 1
    proxy.clear()
    settle(client, admin, flag, traffic)


def test_reset_after_the_server_committed_does_not_double_count(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    """The worst case for counting: the server committed the batch, the answer never arrived. The
    client retries the same batch_id (twice here) and the server counts it once."""
    client = ready_client(make_client, flush_interval=60.0)
    traffic = Traffic(client, flag)
    traffic.run(300)
    proxy.set("reset_after_commit", paths=("/v1/events",), times=2)
    settle(client, admin, flag, traffic)
    posts = proxy.requests("/v1/events", "POST")
    assert [e.fault for e in posts[:3]] == ["reset_after_commit", "reset_after_commit", None]
    assert len({e.batch_id for e in posts[:3]}) == 1  # one batch, sent three times, counted once


@pytest.mark.parametrize("path", ["/v1/config", "/v1/events"])
def test_reset_mid_body(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str, path: str
) -> None:
    """Half an answer, then a reset: a config cut short is not applied (the last good one stays), an
    events answer cut short is retried with the same batch_id (the server had committed it)."""
    client = ready_client(make_client, streaming=False)
    proxy.set("reset_mid_body", paths=(path,))
    assert admin.patch(f"/v1/flags/{flag}", json={"state": "killed"}).status_code == 200
    traffic = Traffic(client, flag)
    traffic.run(200)
    if path == "/v1/config":
        wait_for(lambda: client.stats().config_errors >= 2, 10.0, "two cut config answers")
        assert traffic.reasons["split"] == 200  # the kill did not arrive: the last good config stays
    else:
        wait_for(lambda: client.stats().batches_failed >= 2, 10.0, "two cut events answers")
    proxy.clear()
    wait_for(lambda: traffic.probe() == "disabled", 10.0, "the kill to arrive")
    settle(client, admin, flag, traffic)
    if path == "/v1/events":
        ids = batch_ids(proxy)
        assert ids[0] == ids[1]


# -- the stream -----------------------------------------------------------------------------------------


def test_truncated_stream_falls_back_to_polling(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    """Every stream connection ends in the middle of its first config event: nothing half-received is
    applied, the client polls whenever the stream drops, and a change still arrives."""
    proxy.set("truncate_stream", paths=("/v1/stream",), keep_bytes=60)
    client = ready_client(make_client)
    traffic = Traffic(client, flag)
    traffic.run(100)
    wait_for(lambda: len(proxy.requests("/v1/stream")) >= 2, 10.0, "the stream to reconnect")
    assert admin.patch(f"/v1/flags/{flag}", json={"state": "killed"}).status_code == 200
    wait_for(lambda: traffic.probe() == "disabled", 10.0, "the kill, by polling")
    assert client.stats().stream_events == 0 and client.stats().config_errors == 0
    traffic.run(100)
    proxy.clear()
    wait_for(lambda: streaming_again(proxy, client), 30.0, "a working stream again (after its backoff)")
    settle(client, admin, flag, traffic)


def test_stalled_stream_is_given_up_and_polling_takes_over(
    proxy: FaultProxy,
    make_client: MakeClient,
    admin: httpx.Client,
    flag: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The open stream goes silent (no keep-alive, no event, the connection open): after the read
    timeout the client drops it, polls, and the change made meanwhile arrives."""
    monkeypatch.setattr(_sync, "STREAM_READ_TIMEOUT", 1.5)  # the server's keep-alives come every 0.3 s
    client = ready_client(make_client)
    wait_for(lambda: client.stats().stream_connected, 10.0, "the stream")
    connects = client.stats().stream_connects
    proxy.set("stall_stream", paths=("/v1/stream",))
    assert admin.patch(f"/v1/flags/{flag}", json={"state": "killed"}).status_code == 200
    traffic = Traffic(client, flag)
    traffic.run(100)
    assert traffic.slowest < AT_ONCE
    wait_for(lambda: traffic.probe() == "disabled", 15.0, "the kill despite the stall")
    proxy.clear()
    wait_for(lambda: streaming_again(proxy, client), 30.0, "a working stream again (after its backoff)")
    assert client.stats().stream_connects > connects
    settle(client, admin, flag, traffic)


# -- error answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str, status: int
) -> None:
    client = ready_client(make_client)
    proxy.set("status", status=status)
    traffic = Traffic(client, flag)
    traffic.run(200)
    wait_for(lambda: client.stats().batches_failed >= 1, 10.0, f"a batch to get {status}")
    assert traffic.slowest < AT_ONCE and traffic.reasons["split"] == 200
    proxy.clear()
    settle(client, admin, flag, traffic)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_config_polls(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str, status: int
) -> None:
    """Polling every 0.2 s, the client is told to come back in 1 s: its next poll is >= 1 s later."""
    client = ready_client(make_client, streaming=False)
    proxy.set("status", paths=("/v1/config",), status=status, retry_after="1", times=1)
    wait_for(lambda: len([e for e in proxy.requests("/v1/config") if e.fault]) == 1, 5.0, "the 429")
    wait_for(lambda: proxy.requests("/v1/config")[-1].fault is None, 10.0, "the next poll")
    polls = proxy.requests("/v1/config")
    i = next(i for i, e in enumerate(polls) if e.fault)
    assert polls[i + 1].t - polls[i].t >= 1.0, [round(e.t - polls[i].t, 3) for e in polls[i:]]
    assert client.stats().throttled == 1
    traffic = Traffic(client, flag)
    traffic.run(50)
    settle(client, admin, flag, traffic)


def test_retry_after_as_an_http_date_on_event_posts(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    """429 on the batch with ``Retry-After: <HTTP date 2 s ahead>``: the retry (same batch_id) comes no
    earlier than that date allows (whole seconds: >= 1 s), even though flush() asks for it at once."""
    client = ready_client(make_client, flush_interval=60.0)
    traffic = Traffic(client, flag)
    traffic.run(200)
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    proxy.set("status", paths=("/v1/events",), status=429, retry_after=when, times=1)
    settle(client, admin, flag, traffic)
    posts = proxy.requests("/v1/events", "POST")
    assert posts[0].status == 429 and posts[1].status == 202
    assert posts[1].t - posts[0].t >= 1.0
    assert posts[0].batch_id == posts[1].batch_id


def test_retry_after_on_event_posts(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    client = ready_client(make_client)
    proxy.set("status", paths=("/v1/events",), status=429, retry_after="1", times=1)
    traffic = Traffic(client, flag)
    traffic.run(200)
    wait_for(lambda: len(proxy.requests("/v1/events")) >= 2, 10.0, "the retry")
    posts = proxy.requests("/v1/events", "POST")
    assert posts[1].t - posts[0].t >= 1.0 and posts[0].batch_id == posts[1].batch_id
    settle(client, admin, flag, traffic)


def test_retry_after_on_the_stream(proxy: FaultProxy, make_client: MakeClient, flag: str) -> None:
    proxy.set("status", paths=("/v1/stream",), status=503, retry_after="1", times=1)
    client = ready_client(make_client)
    wait_for(lambda: client.stats().stream_connected, 10.0, "the stream after its Retry-After")
    streams = proxy.requests("/v1/stream")
    assert streams[0].status == 503 and streams[1].t - streams[0].t >= 1.0
    assert client.decide(flag, "u").reason == "split"


def test_retry_after_is_parsed_and_capped() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert _sync.retry_after_seconds("2", now) == 2.0
    assert _sync.retry_after_seconds(" 0 ", now) == 0.0
    assert _sync.retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert _sync.retry_after_seconds("Wed, 31 Dec 2025 23:00:00 GMT", now) == 0.0  # in the past
    assert _sync.retry_after_seconds("86400", now) == _sync.MAX_RETRY_AFTER
    for junk in (None, "", "soon", "-5", "1e309", "nan", "2.5.1"):
        assert _sync.retry_after_seconds(junk, now) is None


# -- bodies that are not a config -----------------------------------------------------------------------

NOT_JSON = b"<html><body>502 Bad Gateway</body></html>"
NOT_A_CONFIG = b'{"schema": 1, "revision": 999999, "flags": [{"key": "x", "variants": "oops"}]}'


@pytest.mark.parametrize("body", [NOT_JSON, NOT_A_CONFIG], ids=["not-json", "fails-validation"])
@pytest.mark.parametrize("streaming", [False, True], ids=["polling", "stream"])
def test_a_bad_config_body_keeps_the_last_good_one(
    proxy: FaultProxy,
    make_client: MakeClient,
    admin: httpx.Client,
    flag: str,
    body: bytes,
    streaming: bool,
) -> None:
    client = ready_client(make_client, streaming=streaming)
    revision = client.stats().config_revision
    proxy.set("body", paths=("/v1/config", "/v1/stream"), body=body)
    if streaming:  # the open stream is healthy: end it, so that the client reconnects into the fault
        proxy.drop_connections()
    wait_for(lambda: client.stats().config_errors >= 2, 10.0, "bad bodies to be fetched and refused")
    traffic = Traffic(client, flag)
    traffic.run(200)
    assert traffic.reasons["split"] == 200 and client.stats().config_revision == revision
    proxy.clear()
    settle(client, admin, flag, traffic)


# -- a server that never answers ------------------------------------------------------------------------


def test_never_answering_server_before_the_first_config(proxy: FaultProxy, make_client: MakeClient) -> None:
    proxy.set("blackhole")
    client = make_client()
    t0 = time.perf_counter()
    assert client.variant("anything", "u1", default="fallback") == "fallback"
    d = client.decide("anything", "u1")
    assert d.reason == "error" and d.error_type == "provider_not_ready"
    assert client.track("anything", "u1") is False
    assert time.perf_counter() - t0 < AT_ONCE
    assert client.wait_until_ready(0.5) is False


def test_never_answering_server(
    proxy: FaultProxy, make_client: MakeClient, admin: httpx.Client, flag: str
) -> None:
    """Every call returns at once; flush() and close() give up at their timeouts and say so (False)."""
    client = ready_client(make_client)
    proxy.set("blackhole")
    traffic = Traffic(client, flag)
    traffic.run(200)
    assert traffic.slowest < AT_ONCE and traffic.reasons["split"] == 200
    t0 = time.monotonic()
    assert client.flush(timeout=1.0) is False
    assert time.monotonic() - t0 < 1.0 + SLACK
    proxy.clear()
    settle(client, admin, flag, traffic)

    proxy.set("blackhole")
    traffic.run(50)  # recorded, then the server never answers again: close() cannot deliver these
    t0 = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - t0 < 1.0 + SLACK
    proxy.clear()
    assert client.stats().pending_batches >= 1  # what could not be delivered is counted
    delivered = sum(n for n, _ in server_counts(admin, flag).values())
    assert delivered == traffic.decided - 50  # the 50 recorded after the last good flush are lost


# -- a refused sdk key ----------------------------------------------------------------------------------


def test_a_refused_sdk_key_is_said_in_words_and_backs_off(
    proxy: FaultProxy, make_client: MakeClient, flag: str, caplog: pytest.LogCaptureFixture
) -> None:
    """401 from the real server: one warning that names the problem and the setting, counted in stats(),
    and no polling at the normal pace (0.2 s here): the next attempt is minutes away."""
    with caplog.at_level(logging.WARNING, logger="banditflags"):
        client = make_client(sdk_key="bf_sdk_not-a-key-of-this-server")
        assert client.wait_until_ready(0.5) is False
        d = client.decide(flag, "u1")
        assert d.reason == "error" and d.error_type == "provider_not_ready"
        wait_for(lambda: client.stats().auth_refusals >= 2, 5.0, "config and stream refused")
        time.sleep(2.0)  # ten poll intervals
    assert len(proxy.requests("/v1/config")) == 1, proxy.requests()
    assert len(proxy.requests("/v1/stream")) == 1
    refused = [r for r in caplog.records if "refused the sdk key" in r.getMessage()]
    assert len(refused) == 1, caplog.text
    assert "BANDITFLAGS_SDK_KEY" in refused[0].getMessage() and "not-a-key" not in caplog.text
    assert client.stats().batches_dropped == 0


def test_a_refused_key_recovers_when_the_server_accepts_it_again(
    proxy: FaultProxy,
    make_client: MakeClient,
    admin: httpx.Client,
    flag: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401 on everything for a while (as during a key rotation), then accepted: the client comes back
    after its (here shortened) backoff and delivers everything it kept."""
    monkeypatch.setattr(_sync, "AUTH_BACKOFF", 0.5)
    monkeypatch.setattr(_sync, "AUTH_MAX_BACKOFF", 1.0)
    client = ready_client(make_client)
    proxy.set("status", status=401)
    traffic = Traffic(client, flag)
    traffic.run(200)
    with caplog.at_level(logging.INFO, logger="banditflags"):
        wait_for(lambda: client.stats().auth_refusals >= 2, 10.0, "the refusals")
        proxy.clear()
        settle(client, admin, flag, traffic)
    assert client.stats().batches_dropped == 0
    assert len([r for r in caplog.records if "refused the sdk key" in r.getMessage()]) == 1
    assert any("accepts the sdk key again" in r.getMessage() for r in caplog.records)
