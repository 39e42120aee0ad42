"""Client: reasons, recording, flushing, lifecycle; against an in-process fake server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditflags import Client, ClientStats, Decision, ErrorType, Reason
from banditflags._bucketing import bucket_of

MakeClient = Callable[..., Client]


def bf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("banditflags-")]


def expected_arm(unit: str, salt: str = "salt-btn") -> int:
    return 0 if bucket_of(salt, unit) < 5000 else 1


def test_constructor_does_no_io_and_starts_no_thread(make_client: MakeClient, server: Any) -> None:
    before = bf_threads()
    client = make_client()
    assert server.config_requests == [] and bf_threads() == before
    server.down = True  # (else the sync thread started by this call may answer before it reads the state)
    d = client.decide("btn", "u1")
    assert d.reason == Reason.ERROR and d.error_type == ErrorType.PROVIDER_NOT_READY
    assert client.variant("btn", "u1", "fallback") == "fallback"
    # The first call started the sync (config poll, push stream, events), even unanswered.
    assert len(bf_threads()) == len(before) + 3
    server.down = False
    assert client.wait_until_ready(10.0)
    assert client.decide("btn", "u1").reason == Reason.SPLIT


@pytest.mark.parametrize("call", ["variant", "decide", "track", "start", "wait_until_ready"])
def test_threads_start_lazily_on_any_call(make_client: MakeClient, call: str) -> None:
    before = len(bf_threads())
    client = make_client()
    assert len(bf_threads()) == before
    if call in ("variant", "decide"):
        getattr(client, call)("nope", "u1")
    elif call == "track":
        client.track("nope", "u1", 1)
    else:
        getattr(client, call)()
    assert len(bf_threads()) == before + 3  # config poll, push stream, events
    assert client.wait_until_ready(5.0)


def test_split_decision(make_client: MakeClient) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    for unit in ("u1", "u2", "alice", "😀", "日本語", "e\u0301"):
        arm = expected_arm(unit)
        d = client.decide("btn", unit)
        assert d == Decision("btn", "ab"[arm], ["A", {"color": "#00f"}][arm], Reason.SPLIT, 1, arm, 0.5)
        assert client.variant("btn", unit) == "ab"[arm]
        assert d.decision_id is not None and d.token == f"bf2:btn:1:{arm}:{d.decision_id}"


def test_int_unit_ids_are_decimal_strings(make_client: MakeClient) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    for n in (0, 1, 42, -7, 10**20):
        assert client.variant("btn", n) == client.variant("btn", str(n))
        assert client.decide("btn", n).arm == expected_arm(str(n))


def test_unknown_flag(make_client: MakeClient) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    assert client.variant("nope", "u1") is None
    assert client.variant("nope", "u1", "off") == "off"
    d = client.decide("nope", "u1", {"x": 1})
    assert (d.reason, d.error_type) == (Reason.ERROR, ErrorType.FLAG_NOT_FOUND)
    assert (d.value, d.variant) == ({"x": 1}, None)


@pytest.mark.parametrize("bad", [None, "", True, False, 1.5, b"u1", ["u1"], object()])
def test_missing_targeting_key(make_client: MakeClient, bad: Any) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    assert client.variant("btn", bad) == "a"  # no default: the control arm
    assert client.variant("btn", bad, "zzz") == "zzz"
    d = client.decide("btn", bad)
    assert (d.reason, d.error_type) == (Reason.ERROR, ErrorType.TARGETING_KEY_MISSING)
    assert (d.variant, d.arm) == ("a", 0)
    d = client.decide("btn", bad, "dflt")
    assert (d.variant, d.value, d.error_type) == (None, "dflt", ErrorType.TARGETING_KEY_MISSING)
    assert d.token is None
    assert client.flush(5.0)
    assert client.stats().batches_sent == 0  # nothing was exposed


def test_general_error_never_raises(make_client: MakeClient) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    d = client.decide(["unhashable"], "u1", "dflt")
    assert (d.reason, d.error_type, d.value) == (Reason.ERROR, ErrorType.GENERAL, "dflt")
    assert client.variant(["unhashable"], "u1", "dflt") == "dflt"


def test_killed_flag_serves_control_and_records_nothing(
    make_client: MakeClient, server: Any, build: Any
) -> None:
    server.set_config(build.config(build.flag(state="killed", table=[[1, 10_000]])))
    client = make_client()
    assert client.wait_until_ready(5.0)
    for i in range(20):
        assert client.variant("btn", f"u{i}") == "a"
        d = client.decide("btn", f"u{i}")
        assert (d.reason, d.variant, d.arm, d.propensity, d.token) == (Reason.DISABLED, "a", 0, 1.0, None)
    # with no memory of u1 there is no arm to credit: rejected (and counted)
    assert client.track("btn", "u1", 1) is False
    assert client.flush(5.0)
    assert server.exposures() == {} and server.rewards() == {}
    assert client.stats().rewards_rejected == 1


def test_kill_and_unkill_return_units_to_their_arm(make_client: MakeClient, server: Any, build: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    before = [client.variant("btn", f"u{i}") for i in range(50)]
    server.set_config(build.config(build.flag(state="killed"), revision=2))
    assert client.refresh()
    assert {client.variant("btn", f"u{i}") for i in range(50)} == {"a"}
    server.set_config(build.config(build.flag(state="running"), revision=3))
    assert client.refresh()
    assert [client.variant("btn", f"u{i}") for i in range(50)] == before


def test_stale_then_confirmed_by_304(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False, stale_after=0.05)
    assert client.refresh()
    assert client.decide("btn", "u1").reason == Reason.SPLIT
    time.sleep(0.1)
    d = client.decide("btn", "u1")
    assert d.reason == Reason.STALE and d.variant == "ab"[expected_arm("u1")] and d.token is not None
    assert client.refresh()  # a 304 confirms the snapshot
    assert server.config_requests[-1].headers["if-none-match"] == '"1"'
    assert client.decide("btn", "u1").reason == Reason.SPLIT


def test_bootstrap_dict_answers_cached(make_client: MakeClient, server: Any, build: Any) -> None:
    server.down = True
    client = make_client(bootstrap=build.config(revision=5))
    d = client.decide("btn", "u1")
    assert (
        d.reason == Reason.CACHED
        and d.arm == expected_arm("u1")
        and d.token == f"bf2:btn:1:{d.arm}:{d.decision_id}"
    )
    assert client.stats().config_revision == 5 and client.stats().config_age_seconds is None
    assert not client.wait_until_ready(0.2)
    server.down = False
    assert client.wait_until_ready(10.0)
    assert client.decide("btn", "u1").reason == Reason.SPLIT


def test_bootstrap_file(make_client: MakeClient, build: Any, tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(build.config()), encoding="utf-8")
    client = make_client(background=False, bootstrap=str(path))
    assert client.decide("btn", "u1").reason == Reason.CACHED
    client2 = make_client(background=False, bootstrap=path)
    assert client2.variant("btn", "u1") == client.variant("btn", "u1")


@pytest.mark.parametrize("bootstrap", [{"schema": 9}, "/no/such/file.json", {"flags": "x"}])
def test_bad_bootstrap_is_ignored(make_client: MakeClient, bootstrap: Any) -> None:
    client = make_client(background=False, bootstrap=bootstrap)
    assert client.decide("btn", "u1").error_type == ErrorType.PROVIDER_NOT_READY


def test_bad_server_payload_keeps_last_good(make_client: MakeClient, server: Any, build: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    server.set_config(build.config(build.flag(table=[[0, 1]]), revision=2))
    assert not client.refresh()
    d = client.decide("btn", "u1")
    assert d.reason == Reason.SPLIT and d.version == 1
    stats = client.stats()
    assert stats.config_revision == 1 and stats.config_errors == 1
    assert "flags[0].table" in (stats.last_error or "")


def test_exposures_are_aggregated_and_delivered(make_client: MakeClient, server: Any) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    units = [f"user-{i}" for i in range(200)]
    for u in units:
        client.variant("btn", u)
        client.decide("btn", u)
    assert client.flush(5.0)
    want: dict[tuple[str, int, int], int] = {}
    for u in units:
        key = ("btn", 1, expected_arm(u))
        want[key] = want.get(key, 0) + 2
    assert server.exposures() == want
    assert client.stats().batches_sent >= 1 and client.stats().pending_batches == 0


def test_track_variants_and_rejections(make_client: MakeClient, server: Any, build: Any) -> None:
    server.set_config(build.config(build.flag("bin"), build.flag("cont", objective={"reward": "continuous"})))
    client = make_client()
    assert client.wait_until_ready(5.0)
    d = client.decide("bin", "u1")
    assert client.track(d)  # reward 1.0 by default
    assert client.track(d.token, reward=0)
    assert client.track("bin", "u1", reward=1) is False  # the same decision again: a duplicate
    assert client.stats().duplicates == 1
    assert client.track("cont", 7, reward=-2.5)
    for args in [
        ("bin", "u1", 0.5),
        ("bin", "u1", True),
        ("cont", "u1", float("nan")),
        ("cont", "u1", "1"),
        ("cont", None, 1.0),
        ("cont", "", 1.0),
        ("nope", "u1", 1.0),
        ("bf1:nope:1:0", None, 1.0),
        ("bf1:bin:1:7", None, 1.0),
        ("bf1:garbage", None, 1.0),
        (42, "u1", 1.0),
    ]:
        assert client.track(*args) is False, args
    assert client.track(Decision("bin", None, None, Reason.ERROR)) is False
    assert client.stats().rewards_rejected == 12
    assert client.flush(5.0)
    rewards = server.rewards()
    arm = d.arm
    assert arm is not None
    assert rewards[("bin", 1, arm)] == (2, 1.0, 1.0)
    assert rewards[("cont", 1, expected_arm("7", "salt-cont"))] == (1, -2.5, 6.25)


def test_track_by_token_from_another_process(make_client: MakeClient, server: Any, build: Any) -> None:
    server.set_config(build.config(build.flag(objective={"reward": "continuous"})))
    web = make_client()
    worker = make_client()
    assert web.wait_until_ready(5.0) and worker.wait_until_ready(5.0)
    token = web.decide("btn", "u1").token
    assert token is not None
    # the worker never saw u1; the token alone names the exact arm and version
    server.set_config(
        build.config(
            build.flag(
                objective={"reward": "continuous"}, version=2, table=[[1, 10_000]], weights=[0.0, 1.0]
            ),
            revision=2,
        )
    )
    assert worker.refresh()
    assert worker.track(token, reward=3.0)
    assert worker.flush(5.0)
    assert server.rewards() == {("btn", 1, expected_arm("u1")): (1, 3.0, 9.0)}


def test_user_unit_end_to_end(make_client: MakeClient, server: Any, build: Any) -> None:
    server.set_config(build.config(build.flag(objective={"reward": "continuous", "unit": "user"})))
    client = make_client(background=False)
    assert client.refresh()
    for _ in range(5):
        client.variant("btn", "alice")
    client.track("btn", "alice", 2.0)
    client.track("btn", "alice", 3.0)
    assert client.flush(5.0)
    key = ("btn", 1, expected_arm("alice"))
    assert server.exposures() == {key: 1}
    assert server.rewards() == {key: (2, 5.0, 25.0)}


def test_flush_false_while_down_true_once_delivered(make_client: MakeClient, server: Any) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    server.events_status = 503
    client.variant("btn", "u1")
    assert client.flush(0.3) is False
    stats = client.stats()
    assert stats.batches_failed >= 1 and stats.pending_batches == 1
    server.events_status = 202
    assert client.flush(5.0) is True
    ids = [b["batch_id"] for b in server.event_requests]
    assert len(set(ids)) == 1 and len(ids) >= 2  # retried with the same batch_id
    assert server.exposures() == {("btn", 1, expected_arm("u1")): 1}


def test_4xx_drops_the_batch(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False)
    assert client.refresh()
    server.events_statuses = [422]
    client.variant("btn", "u1")
    assert client.flush(2.0) is False
    assert client.stats().batches_dropped == 1 and client.stats().pending_batches == 0
    assert client.flush(2.0) is True  # nothing left


def test_max_queue_drops_are_counted_and_reported(make_client: MakeClient, server: Any) -> None:
    client = make_client(background=False, max_queue=10)
    assert client.refresh()
    for i in range(15):
        client.variant("btn", f"u{i}")  # exposures are counted in place: never dropped
        client.track("btn", f"u{i}", 0)  # rewards go through the buffer: 10 fit
    stats = client.stats()
    assert stats.decisions_queued == 10 and stats.decisions_dropped == 5
    assert client.flush(2.0)
    (body,) = server.event_requests
    assert body["dropped"] == 5 and sum(r["count"] for r in body["exposures"]) == 15
    assert sum(r["count"] for r in body["rewards"]) == 10


def test_serverless_mode_runs_no_thread(make_client: MakeClient, server: Any) -> None:
    before = bf_threads()
    client = make_client(background=False)
    assert client.decide("btn", "u").error_type == ErrorType.PROVIDER_NOT_READY
    assert client.wait_until_ready(2.0)  # a synchronous refresh
    client.variant("btn", "u1")
    client.track("btn", "u1", 1)
    client.start()
    assert server.event_requests == []
    assert client.flush(2.0)
    assert len(server.event_requests) == 1
    assert bf_threads() == before


def test_close_is_idempotent_and_bounded(make_client: MakeClient, server: Any) -> None:
    client = make_client()
    assert client.wait_until_ready(5.0)
    client.variant("btn", "u1")
    server.down = True
    t0 = time.monotonic()
    client.close(timeout=0.3)
    client.close(timeout=0.3)
    assert time.monotonic() - t0 < 3.0  # generous: the point is that it returns
    assert client.variant("btn", "u2") in ("a", "b")  # still answers after close
    assert client.stats().decisions_queued == 0  # but records nothing
    assert client.flush(0.1) is False  # the undelivered batch
    thread = client._events.thread
    assert thread is not None and not thread.is_alive()


def test_close_sends_what_is_left(make_client: MakeClient, server: Any) -> None:
    with make_client(flush_interval=60.0) as client:
        assert client.wait_until_ready(5.0)
        client.variant("btn", "u1")
    assert server.exposures() == {("btn", 1, expected_arm("u1")): 1}


def test_stats_record(make_client: MakeClient) -> None:
    client = make_client()
    assert isinstance(client.stats(), ClientStats)
    assert client.stats().config_revision is None
    assert client.wait_until_ready(5.0)
    s = client.stats()
    assert s.config_revision == 1 and s.config_age_seconds is not None and s.config_age_seconds >= 0
    assert "bf_sdk_test" not in repr(client)


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError):
        Client("", "k")
    with pytest.raises(ValueError):
        Client("http://x", "")
    with pytest.raises(ValueError):
        Client("http://x", "k", refresh_interval=0)
    with pytest.raises(ValueError):
        Client("http://x", "k", max_queue=0)


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flag=st.one_of(st.sampled_from(["btn", "nope", ""]), _anything),
    unit=_anything,
    default=_anything,
    reward=_anything,
)
def test_hot_path_never_raises(build: Any, flag: Any, unit: Any, default: Any, reward: Any) -> None:
    client = _shared_client(build)
    v = client.variant(flag, unit, default)
    assert v is default or v in ("a", "b")
    d = client.decide(flag, unit, default)
    assert isinstance(d, Decision) and isinstance(d.reason, Reason)
    assert client.track(flag, unit, reward) in (True, False)
    assert client.track(d, unit, reward) in (True, False)


_SHARED: list[Client] = []


def _shared_client(build: Any) -> Client:
    if not _SHARED:
        _SHARED.append(
            Client("http://bf.test", "k", background=False, bootstrap=build.config(), max_queue=1000)
        )
    return _SHARED[0]
