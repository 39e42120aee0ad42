"""EventProcessor: aggregation (counters, rewards, ids, sum_sq), unknown flags, retries, drops, bounds."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from banditflags._config import FlagSnapshot, parse_config
from banditflags._events import MAX_IDS_PER_BATCH, MAX_ROWS_PER_BATCH, EventProcessor, FlushMarker
from banditflags._inputs import is_valid_reward
from banditflags._sync import Pushback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Poster:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int | tuple[int, str | None] | None] = []

    def __call__(self, body: dict[str, Any], timeout: float) -> int | tuple[int, str | None] | None:
        self.bodies.append(body)
        return self.statuses.pop(0) if self.statuses else 202


Made = tuple[EventProcessor, Poster, Clock, dict[str, FlagSnapshot]]


def make(build: Any, *flags: dict[str, Any], **kw: Any) -> Made:
    snap = parse_config(build.config(*flags) if flags else build.config())
    flags_map = dict(snap.flags)
    poster, clock = Poster(), Clock()
    proc = EventProcessor(
        lambda: flags_map, poster, rng=random.Random(3), clock=clock, sleep=clock.sleep, **kw
    )
    return proc, poster, clock, flags_map


ITEM = ("r", ("btn", None, 1, 0), None, 0.0, False)  # one reward of 0: something to send


def expose(proc: EventProcessor, f: FlagSnapshot, unit: str) -> None:
    """What a decision does: tick the counter of the arm the unit buckets into."""
    proc.agg.watch({f.key: f})
    next(f.counters[f.table[(__import__("mmh3").hash(f.prefix + unit, 0, False) * 10_000) >> 32]])


def test_aggregates_exposures_and_decision_rewards(build: Any) -> None:
    proc, poster, _, flags = make(build)
    f = flags["btn"]
    for i in range(50):
        expose(proc, f, f"u{i}")
    expose(proc, f, "u0")  # decision unit: every decision counts
    proc.queue.append(("r", ("btn", None, 1, 1), "00000000000000aa", 1.0, True))
    proc.queue.append(("r", ("btn", None, 1, 1), "00000000000000ab", 0.0, False))
    assert proc.flush_now(None)
    (body,) = poster.bodies
    assert sum(r["count"] for r in body["exposures"]) == 51
    assert body["rewards"] == [
        {
            "flag": "btn",
            "version": 1,
            "arm": 1,
            "count": 2,
            "sum": 1.0,
            "sum_sq": 1.0,
            "ids": ["00000000000000aa"],
        }
    ]
    assert body["sdk"] == "banditflags-python" and body["dropped"] == 0
    assert len(body["batch_id"]) == 32 and body["sent_at"].endswith("Z")
    assert (
        proc.decision_counts[("btn", "a", "split", "")] + proc.decision_counts[("btn", "b", "split", "")]
        == 51
    )


def test_counts_are_exact_across_a_snapshot_swap(build: Any) -> None:
    proc, poster, _, flags = make(build)
    old = flags["btn"]
    proc.agg.watch(flags)
    next(old.counters[0])
    proc.collect()
    new = parse_config(build.config(build.flag(version=2))).flags["btn"]
    proc.agg.watch({"btn": new})
    next(old.counters[0])  # a decision that still held the old snapshot
    next(new.counters[1])
    assert proc.flush_now(None)
    rows = {(r["version"], r["arm"]): r["count"] for b in poster.bodies for r in b["exposures"]}
    assert rows == {(1, 0): 2, (2, 1): 1}


def test_rule_rows_carry_the_rule(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append(("r", ("btn", "us", 1, 0), None, 0.0, False))
    proc.queue.append(ITEM)
    assert proc.flush_now(None)
    rules = [r.get("rule") for r in poster.bodies[0]["rewards"]]
    assert sorted(rules, key=str) == ["us", None] or sorted(rules, key=str) == [None, "us"]


def test_sum_sq_is_of_per_decision_totals(build: Any) -> None:
    proc, poster, _, _ = make(build, build.flag(objective={"reward": "continuous"}))
    key = ("btn", None, 1, 0)
    for r in (1.0, 2.0, 3.0):
        proc.queue.append(("r", key, "00000000000000a1", r, False))  # one decision worth 6
    proc.queue.append(("r", key, "00000000000000b2", 5.0, False))
    assert proc.flush_now(None)
    (row,) = poster.bodies[-1]["rewards"]
    assert row["count"] == 4 and row["sum"] == 11.0 and "ids" not in row
    assert row["sum_sq"] == pytest.approx(6.0**2 + 5.0**2)
    # a later batch continues the running total: the decision goes from 6 to 8, adding 64 - 36
    proc.queue.append(("r", key, "00000000000000a1", 2.0, False))
    assert proc.flush_now(None)
    assert poster.bodies[-1]["rewards"][0]["sum_sq"] == pytest.approx(64.0 - 36.0)


def test_ids_are_split_at_the_batch_limit(build: Any) -> None:
    proc, poster, _, _ = make(build)
    key = ("btn", None, 1, 0)
    n = MAX_IDS_PER_BATCH + 5
    for i in range(n):
        proc.queue.append(("r", key, f"{i:016x}", 1.0, True))
    # The same id again (it left the SDK's memory): sent as it is; the server takes it out
    # (docs/protocol.md, "Conversions count once"), so the SDK checks no id twice on the worker.
    proc.queue.append(("r", key, f"{0:016x}", 1.0, True))
    assert proc.flush_now(None)
    rows = [r for b in poster.bodies for r in b["rewards"]]
    assert all(sum(len(r.get("ids", ())) for r in b["rewards"]) <= MAX_IDS_PER_BATCH for b in poster.bodies)
    assert sum(r["count"] for r in rows) == n + 1 and sum(r["sum"] for r in rows) == n + 1
    assert all(len(r["ids"]) == r["count"] == r["sum"] == r["sum_sq"] for r in rows)
    assert sorted(i for r in rows for i in r["ids"]) == sorted(
        [f"{i:016x}" for i in range(n)] + [f"{0:016x}"]
    )


def test_unknown_flag_is_logged_once_per_key_and_counted(build: Any, caplog: Any) -> None:
    proc, _, _, _ = make(build)
    for _ in range(3):
        proc.queue.append(("d", "chekout", None, "error", "flag_not_found"))
    proc.queue.append(("d", "other", None, "error", "flag_not_found"))
    proc.drain()
    assert proc.unknown_flags == 4
    lines = [r.getMessage() for r in caplog.records if "not in the configuration" in r.getMessage()]
    assert len(lines) == 2 and "'chekout'" in lines[0]


def test_retry_keeps_batch_id_and_backs_off(build: Any) -> None:
    proc, poster, clock, _ = make(build)
    proc.queue.append(ITEM)
    poster.statuses = [None, 503, 429, 408, 202]
    assert proc.flush_now(clock.now + 1000)
    ids = {b["batch_id"] for b in poster.bodies}
    assert len(poster.bodies) == 5 and len(ids) == 1
    assert proc.batches_failed == 4 and proc.batches_sent == 1
    assert len(clock.slept) == 4 and clock.slept == sorted(clock.slept)  # exponential backoff


def test_flush_now_gives_up_at_the_deadline(build: Any) -> None:
    proc, poster, clock, _ = make(build)
    proc.queue.append(ITEM)
    poster.statuses = [None] * 100
    start = clock.now
    assert not proc.flush_now(clock.now + 5.0)
    assert clock.now - start <= 5.0 and len(proc.pending) == 1


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_4xx_drops_the_batch(build: Any, status: int) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append(ITEM)
    poster.statuses = [status]
    assert not proc.flush_now(None)
    assert proc.batches_dropped == 1 and not proc.pending and len(poster.bodies) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_keeps_the_batch_and_holds_every_send(build: Any, status: int) -> None:
    """401/403: the key may come back (a rotation, a fixed setting): keep the batch, wait minutes."""
    proc, poster, clock, _ = make(build, pushback=Pushback(logging.getLogger("test"), random.Random(1)))
    proc.queue.append(ITEM)
    poster.statuses = [status]
    assert not proc.flush_now(clock.now + 10.0)  # the hold (>= 30 s) is beyond the deadline: no retry
    assert len(proc.pending) == 1 and proc.batches_dropped == 0 and len(poster.bodies) == 1
    assert proc.pushback is not None and proc.pushback.auth_refusals == 1
    assert not proc.send_pending(None) and len(poster.bodies) == 1  # held, not even tried
    assert proc.flush_now(clock.now + 120.0)  # sleeps out the hold, then delivers
    assert clock.slept and clock.slept[-1] >= 30.0 and len(poster.bodies) == 2
    assert poster.bodies[0]["batch_id"] == poster.bodies[1]["batch_id"]


def test_retry_after_holds_the_retry(build: Any) -> None:
    proc, poster, clock, _ = make(build, pushback=Pushback(logging.getLogger("test"), random.Random(1)))
    proc.queue.append(ITEM)
    poster.statuses = [(429, "7")]
    start = clock.now
    assert proc.flush_now(clock.now + 60.0)
    assert clock.now - start >= 7.0 and len(poster.bodies) == 2
    assert proc.pushback is not None and proc.pushback.throttled == 1


def test_max_pending_batches_drops_oldest(build: Any) -> None:
    proc, _poster, _, _ = make(build, max_pending_batches=3)
    for _ in range(5):
        proc.queue.append(ITEM)
        proc.drain()
        proc.cut()
    assert len(proc.pending) == 3 and proc.batches_dropped == 2
    assert [b.seq for b in proc.pending] == [3, 4, 5]


def test_large_aggregates_are_split_into_bounded_batches(build: Any) -> None:
    proc, _poster, _, _ = make(build)
    for v in range(1, MAX_ROWS_PER_BATCH + 2):
        proc.agg.exposures[("btn", None, v, 0)] = 1
    proc.cut()
    assert len(proc.pending) == 2
    assert len(proc.pending[0].body["exposures"]) == MAX_ROWS_PER_BATCH


def test_dropped_count_is_reported_once(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.note_dropped()
    proc.note_dropped()
    assert proc.flush_now(None)
    assert poster.bodies[-1]["dropped"] == 2 and poster.bodies[-1]["exposures"] == []
    proc.queue.append(ITEM)
    assert proc.flush_now(None)
    assert poster.bodies[-1]["dropped"] == 0


def test_flush_marker_resolves_after_delivery(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append(ITEM)
    marker = FlushMarker()
    proc.queue.append(marker)
    poster.statuses = [503]
    assert not proc.flush_now(None)
    assert not marker.event.is_set()
    assert proc.flush_now(None)
    assert marker.event.is_set() and marker.ok


def test_nothing_to_send_sends_nothing(build: Any) -> None:
    proc, poster, _, _ = make(build)
    assert proc.flush_now(None)
    assert poster.bodies == []


def test_after_fork_forgets_unsent_state(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append(ITEM)
    proc.drain()
    proc.cut()
    proc.queue.append(ITEM)
    proc.after_fork_in_child()
    assert not proc.queue and not proc.pending and proc.agg.empty()
    assert proc.flush_now(None) and poster.bodies == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (1, True),
        (0.5, True),
        (-3, True),
        (True, False),
        (float("nan"), False),
        (float("inf"), False),
        ("1", False),
        (None, False),
        (2**2000, False),
    ],
)
def test_is_valid_reward(value: object, ok: bool) -> None:
    assert is_valid_reward(value) is ok
