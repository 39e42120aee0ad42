"""Exposures counted in place (issue 13): exact counts under threads, config swaps and tight loops.

No wall-clock assertions: the loops are bounded by time only to keep the suite short; what is asserted
is that the server's count equals the calls made, and that nothing was dropped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from banditflags._config import parse_config

MakeClient = Any
# Every test twice: track()'s compiled fast path and the Python method alone (conftest.track_impl).
pytestmark = pytest.mark.usefixtures("track_impl")


def _hammer(client: Any, threads: int, seconds: float, flag: str = "btn") -> int:
    """``threads`` threads call ``variant()`` over distinct ids as fast as they can; the calls made."""
    counts = [0] * threads
    stop = threading.Event()

    def run(t: int) -> None:
        variant, n = client.variant, 0
        while not stop.is_set():
            for i in range(1000):
                variant(flag, f"t{t}-{n + i}")
            n += 1000
        counts[t] = n

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts)


@pytest.mark.parametrize("threads", [1, 4])
def test_tight_loop_drops_nothing(make_client: MakeClient, server: Any, threads: int) -> None:
    client = make_client(flush_interval=0.2)
    assert client.wait_until_ready(5.0)
    calls = _hammer(client, threads, 1.0)
    assert client.flush(10.0)
    stats = client.stats()
    assert stats.decisions_dropped == 0 and calls > 0
    assert sum(server.exposures().values()) == calls


def test_counts_are_exact_while_configs_swap(make_client: MakeClient, server: Any, build: Any) -> None:
    """Threads decide while the config changes under them (new versions, killed and back): every
    exposure is counted once, on the version it was served from."""
    client = make_client(flush_interval=0.05, refresh_interval=60.0)
    assert client.wait_until_ready(5.0)
    counts: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def run(t: int) -> None:
        decide, mine, n = client.decide, {}, 0
        while not stop.is_set():
            d = decide("btn", f"t{t}-{n}")
            n += 1
            if d.version is not None and d.reason.value == "split":
                mine[d.version] = mine.get(d.version, 0) + 1
        with lock:
            for v, c in mine.items():
                counts[v] = counts.get(v, 0) + c

    workers = [threading.Thread(target=run, args=(t,)) for t in range(3)]
    for w in workers:
        w.start()
    for version in range(2, 40):  # swap the snapshot under the deciding threads, as the sync thread does
        state = "killed" if version % 7 == 0 else "running"
        client._publish(
            parse_config(build.config(build.flag(version=version, state=state), revision=version))
        )
        time.sleep(0.01)
    stop.set()
    for w in workers:
        w.join()
    assert client.flush(10.0)
    got: dict[int, int] = {}
    for (_, version, _), n in server.exposures().items():
        got[version] = got.get(version, 0) + n
    assert got == counts and sum(counts.values()) > 0
    assert client.stats().decisions_dropped == 0


def test_old_snapshot_counters_are_read_then_released(make_client: MakeClient, build: Any) -> None:
    client = make_client(background=False)
    client._publish(parse_config(build.config(build.flag(version=1))))
    old = client._flags["btn"]
    client.variant("btn", "u1")
    client._publish(parse_config(build.config(build.flag(version=2), revision=2)))
    next(old.counters[0])  # a decision still holding the old snapshot, after the swap
    assert client.flush(2.0)
    agg = client._events.agg
    assert sum(agg._watched[id(c)].last for c in old.counters) == 2
    agg.collect(time.monotonic() + 60.0)  # long after the swap and still: forgotten
    assert all(id(c) not in agg._watched for c in old.counters)


def _sent_ids(server: Any) -> list[str]:
    with server.lock:
        return [i for body in server.accepted.values() for row in body["rewards"] for i in row.get("ids", ())]


@pytest.mark.parametrize("route", ["decision", "token", "unit"])
@pytest.mark.parametrize("threads", [1, 4])
def test_conversions_counted_in_place_are_exact_while_the_worker_cuts(
    make_client: MakeClient, server: Any, threads: int, route: str
) -> None:
    """Threads convert distinct decisions (by Decision, by token, by flag and unit) while the worker
    takes and swaps the id lists every few milliseconds: every accepted conversion is sent once, with
    its id, and counted once; a repeat of each is a duplicate."""
    client = make_client(flush_interval=0.005)
    assert client.wait_until_ready(5.0)
    decisions = [[client.decide("btn", f"t{t}-{i}") for i in range(20_000)] for t in range(threads)]
    assert client.flush(10.0)
    accepted = [0] * threads

    def run(t: int) -> None:
        track, n = client.track, 0
        if route == "decision":
            for d in decisions[t]:
                n += track(d)
        elif route == "token":
            for d in decisions[t]:
                n += track(d.token)
        else:
            for i in range(len(decisions[t])):
                n += track("btn", f"t{t}-{i}")
        accepted[t] = n

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert client.flush(10.0)
    ids = _sent_ids(server)
    expected = {d.decision_id for ds in decisions for d in ds}
    assert sum(accepted) == threads * 20_000 and len(ids) == len(expected) and set(ids) == expected
    rewards = server.rewards()
    assert sum(c for c, _, _ in rewards.values()) == sum(accepted) == sum(s for _, s, _ in rewards.values())
    assert client.stats().decisions_dropped == 0 and client.stats().duplicates == 0
    assert not any(client.track(d) for ds in decisions for d in ds[:100])  # repeats: once per decision
    assert not any(client.track(d.token) for ds in decisions for d in ds[:100])
    assert not any(client.track("btn", f"t{t}-{i}") for t in range(threads) for i in range(100))
    assert client.stats().duplicates == 3 * 100 * threads


@pytest.mark.parametrize("route", ["decision", "keyed"])
def test_a_burst_of_conversions_is_taken_early_instead_of_dropped(
    make_client: MakeClient, server: Any, build: Any, route: str
) -> None:
    """Conversions of 100,000 distinct decisions in a tight loop, 5x the per-list cap (max_queue)
    within one flush interval: a list at half its cap wakes the worker to cut at once, so nothing is
    dropped and every id is sent. ``keyed``: conversions of an older version's decisions (the general
    path's lists)."""
    client = make_client(flush_interval=60.0, max_queue=20_000)
    assert client.wait_until_ready(5.0)
    decisions = [client.decide("btn", f"u{i}") for i in range(100_000)]
    if route == "keyed":  # a new version: the decisions above now convert on the general path
        server.set_config(build.config(build.flag(version=2), revision=2))
        assert client.refresh() and client._flags["btn"].version == 2
    assert client.flush(10.0)
    track = client.track
    accepted = sum(track(d) for d in decisions)
    assert client.flush(10.0)
    assert accepted == 100_000 and client.stats().decisions_dropped == 0
    assert set(_sent_ids(server)) == {d.decision_id for d in decisions}


@pytest.mark.parametrize("kind", ["snapshot", "keyed"])
def test_a_conversion_list_looked_up_before_the_swap_is_still_read(
    make_client: MakeClient, server: Any, kind: str
) -> None:
    """track() found its list, then the worker swapped it before the append: the id lands in the old
    list, which the worker keeps reading until it stays still. Both kinds of list: the snapshot's per
    arm (the current default allocation) and the keyed one (any other rule or version)."""
    from banditflags import Decision, Reason

    client = make_client(background=False)
    assert client.wait_until_ready(5.0)
    agg = client._events.agg
    if kind == "snapshot":
        first, late = client.decide("btn", "u1"), client.decide("btn", "u2")
        lists = client._flags["btn"].conversions
        assert client.track(first)
        old = lists[first.arm]

        def current() -> Any:
            return lists[first.arm]
    else:
        first, late = (
            Decision(
                "btn", "b", "B", Reason.SPLIT, 1, 1, 0.5, decision_id=f"00000000000000a{i}", rule="target"
            )
            for i in range(2)
        )
        assert client.track(first)
        (key,) = agg.conversions
        old = agg.conversions[key]

        def current() -> Any:
            return agg.conversions.get(key)

    assert old == [first.decision_id]
    assert client.flush(2.0)  # the worker's cut: takes u1 and puts a fresh list in place
    assert current() is not old
    old.append(late.decision_id)  # the late append of a track() that held the old list
    assert client.flush(2.0)
    assert sorted(_sent_ids(server)) == sorted([first.decision_id, late.decision_id])
    agg.collect(time.monotonic() + 60.0)  # long after, and still: forgotten
    assert all(entry[0] is not old for entry in agg._conv_lists.values())
