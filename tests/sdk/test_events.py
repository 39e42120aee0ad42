"""EventProcessor: aggregation, user-unit dedup and sum_sq math, retries, drops and bounds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from banditflags._config import FlagSnapshot, parse_config
from banditflags._events import MAX_ROWS_PER_BATCH, EventProcessor, FlushMarker
from banditflags._inputs import is_valid_reward


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
        self.statuses: list[int | None] = []

    def __call__(self, body: dict[str, Any], timeout: float) -> int | None:
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


def exposure(f: FlagSnapshot, unit: str) -> tuple[Any, str]:
    arm = f.table[(__import__("mmh3").hash(f.prefix + unit, 0, False) * 10_000) >> 32]
    return (f.exposure_keys[arm], unit)


def test_aggregates_exposures_and_decision_rewards(build: Any) -> None:
    proc, poster, _, flags = make(build)
    f = flags["btn"]
    for i in range(50):
        proc.queue.append(exposure(f, f"u{i}"))
    proc.queue.append(exposure(f, "u0"))  # decision unit: every decision counts
    proc.queue.append(("t", "btn", 1, 1, None, None, 1.0))
    proc.queue.append(("t", "btn", 1, 1, None, None, 0.0))
    assert proc.flush_now(None)
    (body,) = poster.bodies
    assert sum(r["count"] for r in body["exposures"]) == 51
    assert body["rewards"] == [{"flag": "btn", "version": 1, "arm": 1, "count": 2, "sum": 1.0, "sum_sq": 1.0}]
    assert body["sdk"] == "banditflags-python" and body["dropped"] == 0
    assert len(body["batch_id"]) == 32 and body["sent_at"].endswith("Z")


def test_reward_by_unit_uses_the_served_arm_then_bucketing(build: Any) -> None:
    proc, _poster, clock, flags = make(
        build, build.flag(objective={"reward": "continuous", "credit_window": 100})
    )
    f = flags["btn"]
    # the unit was served arm 1 under version 1 (not what bucketing would say now)
    proc.queue.append((("btn", 1, 1, None), "alice"))
    proc.queue.append(("u", "btn", "alice", 2.5))
    proc.drain()
    assert proc.rewards[("btn", 1, 1, None)] == [1, 2.5, 6.25]
    clock.now += 101  # outside the credit window: falls back to bucketing with the snapshot
    proc.queue.append(("u", "btn", "alice", 1.0))
    proc.drain()
    arm = exposure(f, "alice")[0][2]
    assert proc.rewards[("btn", 1, arm, None)][0] == (2 if arm == 1 else 1)
    proc.queue.append(("u", "btn", "never-seen", 3.0))  # no memory: bucketing
    proc.queue.append(("u", "gone", "alice", 1.0))  # unknown flag: dropped, counted
    proc.drain()
    assert proc.dropped == 1


def test_user_unit_dedup_and_sum_sq_of_user_totals(build: Any) -> None:
    proc, poster, clock, _flags = make(
        build, build.flag(objective={"reward": "continuous", "unit": "user", "credit_window": 100})
    )
    key = ("btn", 1, 0, None)
    for _ in range(3):
        proc.queue.append((key, "alice"))  # counted once per credit window
    proc.queue.append((key, "bob"))
    for r in (1.0, 2.0, 3.0):
        proc.queue.append(("u", "btn", "alice", r))
    proc.queue.append(("t", "btn", 1, 0, None, "bob", 4.0))
    proc.queue.append(("t", "btn", 1, 0, None, "bob", 1.0))
    assert proc.flush_now(None)
    body = poster.bodies[-1]
    assert body["exposures"] == [{"flag": "btn", "version": 1, "arm": 0, "count": 2}]
    (row,) = body["rewards"]
    assert row["count"] == 5 and row["sum"] == 11.0
    assert row["sum_sq"] == pytest.approx(6.0**2 + 5.0**2)  # per-user totals squared
    # a later batch continues the running totals: alice goes from 6 to 8, adding 64 - 36
    proc.queue.append(("u", "btn", "alice", 2.0))
    assert proc.flush_now(None)
    assert poster.bodies[-1]["rewards"][0]["sum_sq"] == pytest.approx(64.0 - 36.0)
    clock.now += 101  # new credit window: alice counts again
    proc.queue.append((key, "alice"))
    assert proc.flush_now(None)
    assert poster.bodies[-1]["exposures"][0]["count"] == 1


def test_killed_flag_reward_by_unit_without_memory_is_dropped(build: Any) -> None:
    proc, _poster, _, _ = make(build, build.flag(state="killed"))
    proc.queue.append(("u", "btn", "carol", 1.0))
    proc.drain()
    assert proc.rewards == {} and proc.dropped == 1


def test_retry_keeps_batch_id_and_backs_off(build: Any) -> None:
    proc, poster, clock, _ = make(build)
    proc.queue.append((("btn", 1, 0, None), "u"))
    poster.statuses = [None, 503, 429, 408, 202]
    assert proc.flush_now(clock.now + 1000)
    ids = {b["batch_id"] for b in poster.bodies}
    assert len(poster.bodies) == 5 and len(ids) == 1
    assert proc.batches_failed == 4 and proc.batches_sent == 1
    assert len(clock.slept) == 4 and clock.slept == sorted(clock.slept)  # exponential backoff


def test_flush_now_gives_up_at_the_deadline(build: Any) -> None:
    proc, poster, clock, _ = make(build)
    proc.queue.append((("btn", 1, 0, None), "u"))
    poster.statuses = [None] * 100
    start = clock.now
    assert not proc.flush_now(clock.now + 5.0)
    assert clock.now - start <= 5.0 and len(proc.pending) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 413, 422])
def test_other_4xx_drops_the_batch(build: Any, status: int) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append((("btn", 1, 0, None), "u"))
    poster.statuses = [status]
    assert not proc.flush_now(None)
    assert proc.batches_dropped == 1 and not proc.pending and len(poster.bodies) == 1


def test_max_pending_batches_drops_oldest(build: Any) -> None:
    proc, _poster, _, _ = make(build, max_pending_batches=3)
    for i in range(5):
        proc.queue.append((("btn", 1, 0, None), f"u{i}"))
        proc.drain()
        proc.cut()
    assert len(proc.pending) == 3 and proc.batches_dropped == 2
    assert [b.seq for b in proc.pending] == [3, 4, 5]


def test_large_aggregates_are_split_into_bounded_batches(build: Any) -> None:
    proc, _poster, _, _ = make(build)
    for v in range(1, MAX_ROWS_PER_BATCH + 2):
        proc.exposures[("btn", v, 0, None)] = 1
    proc.cut()
    assert len(proc.pending) == 2
    assert len(proc.pending[0].body["exposures"]) == MAX_ROWS_PER_BATCH


def test_dropped_count_is_reported_once(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.note_dropped()
    proc.note_dropped()
    assert proc.flush_now(None)
    assert poster.bodies[-1]["dropped"] == 2 and poster.bodies[-1]["exposures"] == []
    proc.queue.append((("btn", 1, 0, None), "u"))
    assert proc.flush_now(None)
    assert poster.bodies[-1]["dropped"] == 0


def test_flush_marker_resolves_after_delivery(build: Any) -> None:
    proc, poster, _, _ = make(build)
    proc.queue.append((("btn", 1, 0, None), "u"))
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
    proc.queue.append((("btn", 1, 0, None), "u"))
    proc.drain()
    proc.cut()
    proc.queue.append((("btn", 1, 0, None), "v"))
    proc.after_fork_in_child()
    assert not proc.queue and not proc.pending and not proc.exposures
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
