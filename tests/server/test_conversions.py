"""Issue 11 in the store, on SQLite and PostgreSQL: conversions credited once per decision id, the
credit window, the prune, migration 4, and concurrent batches sharing ids."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from banditflags_server.api.validation import validate_events, validate_new_flag
from banditflags_server.engine.planning import new_flag
from banditflags_server.errors import ValidationError
from banditflags_server.records import EventBatch, EventRow
from banditflags_server.storage import schema as db
from banditflags_server.storage.store import Store


def _make(store: Store, key: str, **extra: Any) -> None:
    spec = validate_new_flag({"key": key, "variants": ["a", "b"], **extra}, 60.0)
    flag, first = new_flag(spec, np.random.default_rng(0), time.time())
    store.create_flag(flag, first)


def did(i: int) -> str:
    return f"{i:016x}"


def _conversions(flag: str, arm: int, ids: list[str], i: int = 0, version: int = 1) -> EventRow:
    n = len(ids)
    return EventRow(f"rewards[{i}]", flag, version, arm, n, True, float(n), float(n), None, ids)


def _sums(store: Store, key: str) -> list[float]:
    """The conversions counted per arm, as written (what the engine reads is clamped to exposures)."""
    a = db.arm_stats
    with db.read_tx(store.engine) as conn:
        rows = conn.execute(
            sa.select(a.c.arm, sa.func.sum(a.c.s), sa.func.sum(a.c.r), sa.func.sum(a.c.ss))
            .where(a.c.flag == key)
            .group_by(a.c.arm)
        ).all()
    out = [0.0, 0.0]
    for arm, s, r, ss in rows:
        assert float(s) == float(r) == float(ss)  # binary conversions: count, sum and squares agree
        out[int(arm)] = float(s)
    return out


def test_a_conversion_counts_once_per_decision_id(store: Store) -> None:
    _make(store, "f")
    _make(store, "g")
    # Repeats inside a row, across rows of one batch, and in a later batch; other arms and flags apart.
    r = store.ingest(
        EventBatch(
            "batch-one",
            [EventRow("exposures[0]", "f", 1, 0, 100), EventRow("exposures[1]", "f", 1, 1, 100)],
            [
                _conversions("f", 0, [did(1), did(1), did(2)], 0),
                _conversions("f", 0, [did(2), did(3)], 1),
                _conversions("f", 1, [did(1)], 2),  # the same id on another arm: another credit
                _conversions("g", 0, [did(1)], 3),  # and on another flag
            ],
        )
    )
    assert (r.duplicates, r.duplicate_flags, r.removed) == (2, {"f": 2}, {"rewards[0]": 1, "rewards[1]": 1})
    r = store.ingest(EventBatch("batch-two", [], [_conversions("f", 0, [did(3), did(4)])]))
    assert (r.duplicates, r.removed) == (1, {"rewards[0]": 1})
    assert _sums(store, "f") == [4.0, 1.0]
    assert _sums(store, "g") == [1.0, 0.0]
    # A retried batch is a duplicate batch: nothing counted, no id looked at.
    again = store.ingest(EventBatch("batch-two", [], [_conversions("f", 0, [did(9)])]))
    assert again.duplicate and again.duplicates == 0
    assert _sums(store, "f") == [4.0, 1.0]


def test_ids_span_versions_and_rows_without_ids_are_counted_as_sent(store: Store) -> None:
    """(flag, arm, id): a unit (unit ``user``) that converts under two versions of one arm is one credit;
    rows without ids (older SDKs, bf1 tokens) cannot be de-duplicated and count as sent."""
    _make(store, "u", objective={"unit": "user"})
    flag = store.get_flag("u")
    assert flag is not None and flag.allocation is not None
    from banditflags_server.engine.planning import plan

    second = plan(flag, flag.allocation, [0.2, 0.8], 0, "recompute", time.time())
    assert second is not None and store.update_flag(flag, {}, second, now=time.time())
    r = store.ingest(
        EventBatch(
            "batch-versions",
            [],
            [
                _conversions("u", 0, [did(7)], 0, version=1),
                _conversions("u", 0, [did(7)], 1, version=2),
                EventRow("rewards[2]", "u", 2, 0, 2, True, 2.0, 2.0),
            ],
        )
    )
    assert r.duplicates == 1
    a = db.arm_stats
    with db.read_tx(store.engine) as conn:
        s = conn.execute(sa.select(a.c.s).where(a.c.flag == "u", a.c.arm == 0).order_by(a.c.version)).all()
    assert [float(x) for (x,) in s] == [1.0, 2.0]


def test_the_credit_window_and_the_prune(store: Store) -> None:
    _make(store, "w", objective={"credit_window": 100})
    t0 = 1_000_000.0
    assert (
        store.ingest(EventBatch("batch-w1", [], [_conversions("w", 0, [did(1), did(2)])]), now=t0).duplicates
        == 0
    )
    r = store.ingest(EventBatch("batch-w2", [], [_conversions("w", 0, [did(1)])]), now=t0 + 99)
    assert r.duplicates == 1  # inside the window
    # After the window a repeat is a new conversion (not pruned yet: the row is renewed) ...
    r = store.ingest(EventBatch("batch-w3", [], [_conversions("w", 0, [did(1)])]), now=t0 + 101)
    assert r.duplicates == 0
    # ... and opens a window of its own.
    r = store.ingest(EventBatch("batch-w4", [], [_conversions("w", 0, [did(1)])]), now=t0 + 150)
    assert r.duplicates == 1
    assert _sums(store, "w") == [3.0, 0.0]
    # The prune forgets what expired (did 2 at t0 + 100), keeps what did not (did 1 until t0 + 201).
    assert store.prune_conversions(t0 + 150) == 1
    with db.read_tx(store.engine) as conn:
        left = conn.execute(sa.select(db.conversions.c.did, db.conversions.c.expires_at)).all()
    assert [(d, float(e)) for d, e in left] == [(did(1), t0 + 201)]
    # A repeat of a pruned id counts again: the documented limit of a bounded memory.
    assert (
        store.ingest(EventBatch("batch-w5", [], [_conversions("w", 0, [did(2)])]), now=t0 + 160).duplicates
        == 0
    )


def test_the_prune_works_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from banditflags_server.storage import events

    monkeypatch.setattr(events, "PRUNE_CHUNK", 7)
    _make(store, "p", objective={"credit_window": 10})
    for b in range(5):
        ids = [did(b * 10 + i) for i in range(10)]
        store.ingest(EventBatch(f"batch-p{b}", [], [_conversions("p", 1, ids)]), now=100.0 + b)
    assert store.prune_conversions(113.5) == 40  # expiries 110..113 go, 114 stays
    assert store.prune_conversions(1e9) == 10
    assert store.prune_conversions(1e9) == 0


def test_deleting_a_flag_forgets_its_ids(store: Store) -> None:
    _make(store, "d")
    store.ingest(EventBatch("batch-d1", [], [_conversions("d", 0, [did(1)])]))
    assert store.delete_flag("d")
    _make(store, "d")
    assert store.ingest(EventBatch("batch-d2", [], [_conversions("d", 0, [did(1)])])).duplicates == 0


def test_ids_on_a_continuous_objective_reject_the_batch(store: Store) -> None:
    _make(store, "c", objective={"reward": "continuous"})
    _make(store, "b")
    batch = EventBatch(
        "batch-c",
        [EventRow("exposures[0]", "b", 1, 0, 5)],
        [_conversions("b", 0, [did(1)], 0), _conversions("c", 0, [did(1)], 1)],
    )
    with pytest.raises(ValidationError) as exc:
        store.ingest(batch)
    assert exc.value.errors == [("rewards[1].ids", "decision ids are only for binary objectives")]
    assert _sums(store, "b") == [0.0, 0.0]  # nothing of the batch, its ids included
    with db.read_tx(store.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.conversions)).scalar_one() == 0


def test_rows_of_unknown_flags_or_versions_leave_their_ids_alone(store: Store) -> None:
    _make(store, "k")
    r = store.ingest(
        EventBatch(
            "batch-k1",
            [],
            [_conversions("k", 0, [did(1)], 0, version=9), _conversions("nope", 0, [did(1)], 1)],
        )
    )
    assert [i["reason"] for i in r.ignored] == ["unknown version", "unknown flag"]
    assert store.ingest(EventBatch("batch-k2", [], [_conversions("k", 0, [did(1)])])).duplicates == 0


def test_concurrent_batches_sharing_ids_credit_each_once(store: Store) -> None:
    """Two threads (two connections) ingest batches drawn from one pool of ids, in different orders: on
    PostgreSQL both may insert an id, the loser's transaction is retried and finds it."""
    _make(store, "race")
    pool = [(arm, did(i)) for arm in (0, 1) for i in range(150)]
    reported: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for b in range(15):
                picks = rng.sample(pool, 40)
                rows = [
                    _conversions("race", arm, [d for a, d in picks if a == arm], i)
                    for i, arm in enumerate((0, 1))
                ]
                r = store.ingest(EventBatch(f"batch-race-{seed}-{b}", [], [x for x in rows if x.ids]))
                reported.append(r.duplicates)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with db.read_tx(store.engine) as conn:
        credited = conn.execute(sa.select(db.conversions.c.arm, db.conversions.c.did)).all()
    assert len(credited) == len(set(credited))
    per_arm = [sum(1 for a, _ in credited if a == arm) for arm in (0, 1)]
    assert _sums(store, "race") == [float(x) for x in per_arm]
    assert sum(reported) == 2 * 15 * 40 - len(credited)


def test_migration_4_upgrades_a_schema_3_database(url: str) -> None:
    engine = db.create_engine(url)
    with db.write_tx(engine) as conn:  # a database as issue 3's release left it: no conversions table
        db.metadata.create_all(conn, tables=[t for t in db.metadata.sorted_tables if t is not db.conversions])
        conn.execute(sa.insert(db.meta).values(key="revision", value=0))
        conn.execute(sa.insert(db.meta).values(key="schema_version", value=3))
    engine.dispose()
    old = Store(db.create_engine(url))  # the old data, written before the upgrade
    _make(old, "old")
    old.ingest(EventBatch("batch-old", [EventRow("exposures[0]", "old", 1, 0, 10)], []))
    old.close()
    s = Store.open(url)
    try:
        assert s.schema_version() == db.SCHEMA_VERSION >= 4
        assert "conversions" in sa.inspect(s.engine).get_table_names()
        assert s.load_periods({"old": 2})["old"].n.sum() == 10
        assert s.load_periods({"old": 2})["old"].s.sum() == 0
        r = s.ingest(EventBatch("batch-new", [], [_conversions("old", 0, [did(5), did(5)])]))
        assert r.duplicates == 1 and _sums(s, "old") == [1.0, 0.0]
    finally:
        s.close()
    again = Store.open(url)  # idempotent
    assert again.schema_version() == db.SCHEMA_VERSION
    again.close()


def test_ids_validation_names_the_field() -> None:
    def problems(rewards: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
        with pytest.raises(ValidationError) as exc:
            validate_events({"batch_id": "batch-ids", "rewards": rewards})
        return exc.value.errors

    row = {"flag": "f", "version": 1, "arm": 0, "count": 2, "sum": 2, "sum_sq": 2}
    assert problems([{**row, "ids": ["ABCDEF0123456789"]}]) == [
        ("rewards[0].ids[0]", "must match ^[0-9a-f]{16}$")
    ]
    assert problems([row, {**row, "ids": [did(1), "123"]}]) == [
        ("rewards[1].ids[1]", "must match ^[0-9a-f]{16}$")
    ]
    assert problems([{**row, "ids": "0000000000000001"}]) == [("rewards[0].ids", "must be a list or null")]
    assert problems([{**row, "ids": [did(1), did(2), did(3)]}]) == [
        ("rewards[0].ids", "at most sum (2) ids: one per conversion counted in this row, got 3")
    ]
    assert problems([{**row, "metric": "errors", "ids": [did(1)]}]) == [
        ("rewards[0].ids", "decision ids are for the objective's conversions, not a metric's")
    ]
    ok = validate_events({"batch_id": "batch-ids", "rewards": [{**row, "ids": [did(1), did(1)]}, row]})
    assert [r.ids for r in ok.rewards] == [[did(1), did(1)], None]
