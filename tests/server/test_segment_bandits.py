"""Segment bandits in the store and the recompute (issue 12), on SQLite and PostgreSQL: event rows per
(flag, rule, version, arm), each bandit rule learning from its own rows only with its own versions and
minimal-movement table, kill / freeze / throttle over rules, and migration 5 from a schema-4 database."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from banditflags_server.api.validation import validate_new_flag, validate_patch
from banditflags_server.engine.allocation import decode_rle, minimal_movement, table_counts
from banditflags_server.engine.planning import new_flag
from banditflags_server.records import EventBatch, EventRow
from banditflags_server.service.recompute import apply_patch, recompute_due
from banditflags_server.storage import schema as db
from banditflags_server.storage.store import Store

RULES = [
    {
        "id": "us",
        "clauses": [{"attribute": "country", "op": "in", "values": ["us"]}],
        "serve": {"bandit": True},
    },
    {
        "id": "fr",
        "clauses": [{"attribute": "country", "op": "in", "values": ["fr"]}],
        "serve": {"bandit": True},
    },
    {"id": "staff", "clauses": [{"attribute": "staff", "op": "exists"}], "serve": {"variant": "b"}},
]
POLICY = {"name": "thompson", "burn_in": 20, "max_step": None, "floor": 0.01}


def _make(store: Store, key: str = "f", **extra: Any) -> None:
    body = {
        "key": key,
        "variants": ["a", "b", "c"],
        "recompute_interval": 1,
        "policy": POLICY,
        "rules": RULES,
    }
    spec = validate_new_flag({**body, **extra}, 60.0)
    flag, first = new_flag(spec, np.random.default_rng(0), time.time() - 10)
    store.create_flag(flag, first)


def _rows(flag: str, rule: str, version: int, n: list[int], s: list[int]) -> list[EventRow]:
    rows = [EventRow(f"exposures[{i}]", flag, version, i, c, rule=rule) for i, c in enumerate(n) if c]
    rows += [
        EventRow(f"rewards[{i}]", flag, version, i, c, True, float(c), float(c), rule=rule)
        for i, c in enumerate(s)
        if c
    ]
    return rows


def _ingest(store: Store, batch_id: str, rows: list[EventRow]) -> Any:
    return store.ingest(
        EventBatch(batch_id, [r for r in rows if not r.is_reward], [r for r in rows if r.is_reward])
    )


def _counts(store: Store, key: str, rule: str) -> list[int]:
    flag = store.get_flag(key)
    assert flag is not None
    return table_counts(decode_rle(flag.rule_allocations[rule].table_rle, 3), 3)


def test_rows_are_counted_per_rule_and_old_rows_are_the_default(store: Store) -> None:
    _make(store)
    r = _ingest(
        store,
        "batch-rules-1",
        [
            *_rows("f", "", 1, [10, 10, 10], [1, 2, 3]),
            *_rows("f", "us", 1, [5, 5, 5], [0, 5, 0]),
            *_rows("f", "staff", 1, [0, 7, 0], [0, 1, 0]),
            *_rows("f", "target", 1, [2, 0, 0], [0, 0, 0]),
            *_rows("f", "gone", 9, [1, 0, 0], [0, 0, 0]),  # a rule deleted since: reported, not an error
            *_rows("f", "fr", 7, [1, 0, 0], [0, 0, 0]),  # a bandit rule's unknown version: ignored
        ],
    )
    assert r.exposures == 9 and r.rewards == 5
    assert [i["reason"] for i in r.ignored] == ["unknown version"]
    assert store.load_periods({"f": 3})["f"].n.sum() == 30  # the default allocation: rule "" only
    rules = store.load_rule_periods({"f": 3})["f"]
    assert rules["us"].versions == [1] and rules["us"].n.tolist() == [[5, 5, 5]]
    assert rules["us"].s.tolist() == [[0, 5, 0]]
    assert rules["staff"].n.tolist() == [[0, 7, 0]] and rules["target"].n.tolist() == [[2, 0, 0]]
    assert rules["gone"].versions == [9] and rules["fr"].n.sum() == 0
    # A retry counts nothing; a group of batches coalesces per (flag, rule, version, arm).
    assert _ingest(store, "batch-rules-1", _rows("f", "us", 1, [5, 5, 5], [0, 0, 0])).duplicate
    _ingest(store, "batch-rules-2", _rows("f", "us", 1, [1, 0, 0], [0, 0, 0]))
    assert store.load_rule_periods({"f": 3})["f"]["us"].n.tolist() == [[6, 5, 5]]


def test_each_bandit_rule_learns_from_its_own_rows_with_its_own_versions(store: Store) -> None:
    _make(store)
    rng = np.random.default_rng(1)
    # The default allocation and "fr" see arm a win; "us" sees arm c win.
    _ingest(store, "batch-learn-1", _rows("f", "", 1, [400, 400, 400], [300, 40, 40]))
    _ingest(store, "batch-learn-2", _rows("f", "us", 1, [400, 400, 400], [40, 40, 300]))
    _ingest(store, "batch-learn-3", _rows("f", "fr", 1, [400, 400, 400], [300, 40, 40]))
    _ingest(store, "batch-learn-4", _rows("f", "staff", 1, [0, 900, 0], [0, 900, 0]))  # never fed
    before = {rule: _counts(store, "f", rule) for rule in ("us", "fr")}
    recompute_due(store, rng, now=time.time() + 5)
    flag = store.get_flag("f")
    assert flag is not None
    us, fr = flag.rule_allocations["us"], flag.rule_allocations["fr"]
    assert us.version == 2 and fr.version == 2 and flag.version == 2
    assert int(np.argmax(us.weights)) == 2 and int(np.argmax(fr.weights)) == 0
    assert int(np.argmax(flag.allocation.weights if flag.allocation else [])) == 0
    # Minimal movement inside each rule's own table.
    for rule, a in (("us", us), ("fr", fr)):
        after = _counts(store, "f", rule)
        assert a.moved == minimal_movement(before[rule], after)
    history = store.rule_history("f")
    assert [a.version for a in history["us"]] == [1, 2] and [a.version for a in history["fr"]] == [1, 2]
    # The new versions are the ones rows may name now.
    r = _ingest(store, "batch-learn-5", _rows("f", "us", 2, [1, 0, 0], [0, 0, 0]))
    assert r.exposures == 1 and not r.ignored


def test_kill_freeze_and_throttle_apply_to_every_rule(store: Store) -> None:
    _make(store)
    rng = np.random.default_rng(2)
    _ingest(store, "batch-ctl-1", _rows("f", "us", 1, [400, 400, 400], [40, 40, 300]))
    for state in ("frozen", "killed"):
        flag = store.get_flag("f")
        assert flag is not None
        patch = validate_patch(
            {"state": state}, current_policy=flag.policy, objective=flag.objective, k=3,
            variant_keys=["a", "b", "c"], control="a",
        )  # fmt: skip
        apply_patch(store, "f", patch, rng)
        recompute_due(store, rng, now=time.time() + 5)
        got = store.get_flag("f")
        assert got is not None and got.rule_allocations["us"].version == 1  # not recomputed
    flag = store.get_flag("f")
    assert flag is not None
    patch = validate_patch(
        {"state": "running", "exploration": 0.2}, current_policy=flag.policy, objective=flag.objective, k=3,
        variant_keys=["a", "b", "c"], control="a",
    )  # fmt: skip
    apply_patch(store, "f", patch, rng)
    recompute_due(store, rng, now=time.time() + 5)
    flag = store.get_flag("f")
    assert flag is not None
    us = flag.rule_allocations["us"]
    # The throttle: 80% of the rule's traffic goes to the baseline (the control), 20% as its bandit says.
    assert us.weights[0] >= 0.8 and abs(sum(us.weights) - 1) < 1e-9
    assert us.weights[2] == pytest.approx(0.2 * us.bandit_weights[2], abs=1e-3)


def test_migration_5_upgrades_a_schema_4_database(url: str) -> None:
    engine = db.create_engine(url)
    with db.write_tx(engine) as conn:  # a database as issue 14's release left it
        old = sa.MetaData()
        new_tables = (db.rule_allocations, db.rule_stats, db.segments)
        for table in db.metadata.sorted_tables:
            if table not in new_tables:
                table.to_metadata(old)
        for name in ("targets", "rules", "rule_allocations"):
            old.tables["flags"]._columns.remove(old.tables["flags"].c[name])
        old.tables["audit_log"]._columns.remove(old.tables["audit_log"].c["kind"])
        old.create_all(conn)
        conn.execute(sa.insert(db.meta).values(key="revision", value=0))
        conn.execute(sa.insert(db.meta).values(key="schema_version", value=4))
        spec = validate_new_flag({"key": "old", "variants": ["a", "b"]}, 60.0)
        flag, first = new_flag(spec, np.random.default_rng(0), time.time())
        from banditflags_server.storage.rows import alloc_values, flag_values

        values = {
            k: v for k, v in flag_values(flag).items() if k not in ("targets", "rules", "rule_allocations")
        }
        conn.execute(sa.insert(old.tables["flags"]).values(**values))
        conn.execute(sa.insert(old.tables["allocations"]).values(**alloc_values("old", first)))
        conn.execute(
            sa.insert(old.tables["arm_stats"]).values(flag="old", version=1, arm=1, n=10, r=2, s=2.0, ss=2.0)
        )
        conn.execute(
            sa.insert(old.tables["audit_log"]).values(
                flag="old", at=1.0, actor="a", action="create", before=None, after="{}", reason=""
            )
        )
    engine.dispose()
    s = Store.open(url)
    try:
        assert s.schema_version() == db.SCHEMA_VERSION >= 5
        got = s.get_flag("old")
        assert got is not None and got.rules == [] and got.targets == [] and got.rule_allocations == {}
        assert s.load_periods({"old": 2})["old"].n.tolist() == [[0, 10]]  # old rows: rule ""
        assert s.load_rule_periods({"old": 2})["old"] == {}
        from banditflags_server.storage import audit

        assert [e.action for e in audit.entries(s.engine, "old")] == ["create"]
        assert s.list_segments() == []
    finally:
        s.close()
    again = Store.open(url)  # idempotent
    assert again.schema_version() == db.SCHEMA_VERSION
    again.close()


@pytest.mark.parametrize("pooling", ["auto", "off"])
def test_a_small_segment_borrows_the_flag_s_best_arm(store: Store, pooling: str) -> None:
    """Segment pooling through the store and the recompute loop: the default allocation and "fr" have
    plenty of data where arm c wins; "us" has a handful of exposures (in burn-in on its own). With
    pooling its bandit starts from the flag's arm c; with ``pooling: "off"`` it stays uniform."""
    _make(store, policy={**POLICY, "burn_in": 100, "pooling": pooling})
    rng = np.random.default_rng(3)
    _ingest(store, "batch-pool-1", _rows("f", "", 1, [3000, 3000, 3000], [150, 160, 240]))
    _ingest(store, "batch-pool-2", _rows("f", "fr", 1, [2000, 2000, 2000], [60, 62, 100]))
    _ingest(store, "batch-pool-3", _rows("f", "us", 1, [8, 8, 8], [1, 0, 1]))
    recompute_due(store, rng, now=time.time() + 5)
    flag = store.get_flag("f")
    assert flag is not None
    us = flag.rule_allocations["us"]
    if pooling == "auto":
        assert us.version == 2 and int(np.argmax(us.bandit_weights)) == 2 and us.bandit_weights[2] > 0.9
    else:
        assert us.version == 1 and us.bandit_weights == pytest.approx([1 / 3] * 3)
    assert int(np.argmax(flag.rule_allocations["fr"].bandit_weights)) == 2


def test_a_disabled_arm_leaves_every_rule_table_at_once(store: Store) -> None:
    _make(store)
    rng = np.random.default_rng(3)
    flag = store.get_flag("f")
    assert flag is not None
    patch = validate_patch(
        {"disabled": ["c"]}, current_policy=flag.policy, objective=flag.objective, k=3,
        variant_keys=["a", "b", "c"], control="a",
    )  # fmt: skip
    got = apply_patch(store, "f", patch, rng, actor="env-admin")
    for rule in ("us", "fr"):
        assert got.rule_allocations[rule].weights[2] == 0.0 and got.rule_allocations[rule].version == 2
        assert _counts(store, "f", rule)[2] == 0
    assert [a.reason for a in store.rule_history("f")["us"]] == ["created", "arms"]
