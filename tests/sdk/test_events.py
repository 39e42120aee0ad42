"""EventProcessor: aggregation (counters, rewards, ids, sum_sq), unknown flags, retries, drops, bounds."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from banditflags._aggregate import Aggregator, Ids, ids_text
from banditflags._config import FlagSnapshot, parse_config
from banditflags._events import (
    MAX_IDS_PER_BATCH,
    MAX_ROWS_PER_BATCH,
    EventProcessor,
    FlushMarker,
    encode_body,
)
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


_GOOD_ID = st.integers(0, 2**64 - 1).map(lambda i: f"{i:016x}")
_ANY_ID = st.one_of(
    _GOOD_ID,
    _GOOD_ID.map(str.upper),
    _GOOD_ID.map(lambda i: i[1:]),  # 15 digits
    _GOOD_ID.map(lambda i: i + "0"),  # 17
    st.text(max_size=18),  # quotes, commas, backslashes, non-ASCII
    st.sampled_from(['0000000000000a"b', "000000000000,abc", "000000000000000\\", 7, None]),
)


def _valid(i: object) -> bool:
    return isinstance(i, str) and len(i) == 16 and all(c in "0123456789abcdef" for c in i)


def _pairs(text: bytes) -> Any:
    """The JSON, with every object as its list of (key, value) pairs: equal only in the same order."""
    return json.loads(text, object_pairs_hook=list)


@settings(max_examples=300)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.lists(_ANY_ID, max_size=6), st.lists(_GOOD_ID, min_size=1, max_size=6)),
            st.booleans(),  # ids as the worker's Ids (their text joined and checked by ids_text)
            st.booleans(),  # a rule
        ),
        max_size=4,
    ),
    head_first=st.booleans(),
)
def test_encode_body_is_json_with_the_bad_ids_taken_out_and_a_retry_sends_the_same_bytes(
    rows: list[tuple[list[Any] | None, bool, bool]], head_first: bool
) -> None:
    """What encode_body writes is the body as JSON in its own key order, each row's ``ids`` last in
    it and holding only the ids that are 16 lower-case hex digits (the key gone when none is); the
    row's ``ids`` in the body say the same; and encoding it again (a retry) gives the same bytes."""
    rewards: list[dict[str, Any]] = []
    expected_rewards: list[dict[str, Any]] = []
    for ids, as_ids, rule in rows:
        r: dict[str, Any] = {"flag": "btn", "version": 1, "arm": 0, **({"rule": "r1"} if rule else {})}
        r.update(count=9, sum=9.0, sum_sq=9.0)
        expected = dict(r)
        if ids is not None:
            r["ids"] = Ids(ids, ids_text(ids)) if as_ids else list(ids)
            good = [i for i in ids if _valid(i)]
            if good or not ids:
                expected["ids"] = good
        rewards.append(r)
        expected_rewards.append(expected)
    body: dict[str, Any] = {"batch_id": "b1", "rewards": rewards, "dropped": 0}
    if head_first:
        body = {"rewards": rewards, "batch_id": "b1"}
    sent = encode_body(body)
    want = {k: expected_rewards if k == "rewards" else v for k, v in body.items()}
    assert _pairs(sent) == _pairs(json.dumps(want).encode())
    assert _pairs(sent) == _pairs(json.dumps(body).encode())  # the body says what was sent
    assert encode_body(body) == sent


@settings(max_examples=500)
@given(ids=st.lists(st.text(alphabet='0af",A', min_size=14, max_size=18), min_size=1, max_size=4))
@example(ids=["000000000000000", "00000000000000000"])  # 15 + 17 digits: 32, as two good ids
@example(ids=["00000000000000", "000000000000000000"])  # 14 + 18
@example(ids=["0000000000000000", '0","0000000000000', "000000000000000"])  # a separator inside
def test_ids_text_takes_only_ids_of_16_lower_case_hex_digits(ids: list[str]) -> None:
    valid = all(_valid(i) for i in ids)
    assert ids_text(ids) == ('","'.join(ids).encode() if valid else None)


def test_a_retry_sends_the_same_bytes_when_no_id_of_the_batch_is_left(build: Any) -> None:
    """A hand-made Decision's bad id taken out on the first try, then a 503: the retry sends the same
    bytes (not merely the same JSON), though no row has ids any more."""
    proc, _, clock, _ = make(build)
    sent: list[bytes] = []
    statuses = [503, 202]

    def post(body: dict[str, Any], timeout: float) -> int:
        sent.append(encode_body(body))
        return statuses.pop(0)

    proc.post = post
    proc.queue.append(("r", ("btn", None, 1, 1), "-12ab", 1.0, True))
    proc.queue.append(ITEM)
    assert proc.flush_now(clock.now + 1000)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert all("ids" not in r for r in json.loads(sent[0])["rewards"])


_MAX = 4  # a small max_ids: many chunk boundaries
_KEYS = [("btn", None, 1, 0), ("btn", "r1", 1, 1)]


@settings(max_examples=300)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 1), st.integers(1, 11)),  # to the key's list
            st.tuples(st.just("late"), st.integers(0, 99), st.integers(1, 3)),  # to a list swapped out
            st.tuples(st.just("reward"), st.integers(0, 1), st.just(0)),  # by the queue
            st.tuples(st.just("collect"), st.just(0), st.just(0)),
        ),
        max_size=30,
    ),
    bad=st.integers(0, 60),  # the n-th id made is not hex (a hand-made Decision's)
)
def test_conversion_rows_split_as_one_list_would(ops: list[tuple[str, int, int]], bad: int) -> None:
    """Conversion ids reach a key's rows from several lists (the current one, and old ones a late
    track() still appends to) and from the queue, over several collects before a cut. The rows are
    those of one list of the key's ids in the order they were taken: ``max_ids`` ids in each but the
    last, the counts adding up; every id taken once; each row's text the checked join of its ids."""
    agg = Aggregator(1000, max_ids=_MAX)
    expected: dict[Any, list[str]] = {k: [] for k in _KEYS}
    appended: dict[int, list[str]] = {}  # every list's ids so far, by id(list)
    done: dict[int, int] = {}  # how many of them were taken
    swapped: list[tuple[list[str], Any]] = []  # the lists the worker took, in the order it reads them
    made = 0

    def fresh(k: int) -> str:
        nonlocal made
        made += 1
        return "-12ab" if made == bad else f"{k:02x}{made:014x}"

    def collect() -> None:  # the worker's order: lists taken before first, then the ones swapped now
        for key, ids in list(agg.conversions.items()):  # an empty one too (idle: dropped from the dict)
            swapped.append((ids, key))
            appended.setdefault(id(ids), [])
            done.setdefault(id(ids), 0)
        agg.collect(0.0)
        for ids, key in swapped:
            expected[key] += appended[id(ids)][done[id(ids)] :]
            done[id(ids)] = len(appended[id(ids)])

    for op, k, m in ops:
        if op == "append":
            ids = agg.conversions.setdefault(_KEYS[k], [])
            new = [fresh(k) for _ in range(m)]
            ids += new
            appended.setdefault(id(ids), []).extend(new)
            done.setdefault(id(ids), 0)
        elif op == "late" and swapped:
            ids, key = swapped[k % len(swapped)]
            new = [fresh(_KEYS.index(key)) for _ in range(m)]
            ids += new
            appended[id(ids)].extend(new)
        elif op == "reward":
            did = fresh(k)
            agg.reward(_KEYS[k], did, 1.0, True)
            expected[_KEYS[k]].append(did)
        elif op == "collect":
            collect()
    collect()
    rows = [(r, n) for kind, r, n in agg.take_rows() if kind == "rewards"]
    for key in _KEYS:
        mine = [(r, n) for r, n in rows if (r["flag"], r.get("rule"), r["version"], r["arm"]) == key]
        assert [i for r, _ in mine for i in r.get("ids", [])] == expected[key]
        assert sum(r["count"] for r, _ in mine) == len(expected[key]) == sum(r["sum"] for r, _ in mine)
        assert [len(r["ids"]) for r, _ in mine[:-1]] == [_MAX] * (len(mine) - 1)
        for r, n in mine:
            assert n == len(r.get("ids", [])) == r["count"] == r["sum"] == r["sum_sq"]
            if "ids" in r:
                assert 1 <= n <= _MAX and r["ids"].text == ids_text(list(r["ids"]))
    for ids, _ in swapped:
        assert not ids  # every id taken was taken out of its list


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
