"""Issue 3 in the store, on SQLite and PostgreSQL: migration 2, metric stats, batched recompute writes."""

from __future__ import annotations

import time

import numpy as np
import sqlalchemy as sa

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import new_flag
from banditflags_server.records import EventBatch, EventRow
from banditflags_server.service.recompute import recompute_due
from banditflags_server.storage import schema as db
from banditflags_server.storage.store import Store


def _make(store: Store, key: str, **extra: object) -> None:
    spec = validate_new_flag(
        {"key": key, "variants": ["a", "b", "c"], "recompute_interval": 1, **extra}, 60.0
    )
    flag, first = new_flag(spec, np.random.default_rng(0), time.time())
    store.create_flag(flag, first)


def test_migration_2_upgrades_a_version_1_database(url: str) -> None:
    engine = db.create_engine(url)
    with db.write_tx(engine) as conn:  # a database as the first release left it
        db.metadata.create_all(conn, tables=[db.meta])
        old = sa.MetaData()
        for table in (db.api_keys, db.allocations, db.arm_stats, db.batches):
            table.to_metadata(old)
        flags_v1 = db.flags.to_metadata(old)
        for name in ("guardrails", "arm_state"):
            flags_v1._columns.remove(flags_v1.c[name])
        old.create_all(conn)
        conn.execute(sa.insert(db.meta).values(key="revision", value=0))
        conn.execute(sa.insert(db.meta).values(key="schema_version", value=1))
    engine.dispose()
    s = Store.open(url)
    try:
        assert s.schema_version() == db.SCHEMA_VERSION >= 2
        _make(s, "old", guardrails=[{"metric": "errors"}])
        flag = s.get_flag("old")
        assert flag is not None and flag.guardrails[0]["metric"] == "errors" and flag.arm_state == {}
    finally:
        s.close()


def test_metric_stats_add_up_per_metric(store: Store) -> None:
    _make(store, "m", guardrails=[{"metric": "errors"}, {"metric": "latency", "reward": "continuous"}])
    rows = [EventRow(f"exposures[{i}]", "m", 1, i, 1000) for i in range(3)]
    for b in range(2):
        rewards = [
            EventRow("rewards[0]", "m", 1, 1, 7, True, 7.0, 7.0, "errors"),
            EventRow("rewards[1]", "m", 1, 0, 3, True, 300.0, 31_000.0, "latency"),
            EventRow("rewards[2]", "m", 1, 0, 5, True, 5.0, 5.0),
        ]
        store.ingest(EventBatch(f"batch-metric-{b}", rows, rewards))
    metrics = store.load_metrics({"m": 3})["m"]
    assert metrics["errors"][0].tolist() == [0.0, 14.0, 0.0]
    assert metrics["latency"][0].tolist() == [600.0, 0.0, 0.0]
    assert metrics["latency"][1].tolist() == [62_000.0, 0.0, 0.0]
    periods = store.load_periods({"m": 3})["m"]
    assert periods.s.sum(axis=0).tolist() == [10.0, 0.0, 0.0]  # the objective only
    assert store.delete_flag("m")
    assert store.load_metrics({"m": 3})["m"] == {}


def test_batched_recompute_writes_skip_changed_flags(store: Store) -> None:
    for i in range(5):
        _make(store, f"f{i}", policy={"max_step": None})
        rows = [EventRow(f"exposures[{a}]", f"f{i}", 1, a, 2000) for a in range(3)]
        store.ingest(
            EventBatch(f"batch-f{i}", rows, [EventRow("rewards[0]", f"f{i}", 1, 2, 400, True, 400.0, 400.0)])
        )
    # One flag changes under the recompute: frozen by the operator between the read and the write.
    frozen = store.get_flag("f3")
    assert frozen is not None
    store.update_flag(frozen, {"state": "frozen"}, None, now=time.time())
    due = recompute_due(store, np.random.default_rng(1), now=time.time() + 5)
    assert sorted(r.key for r in due) == ["f0", "f1", "f2", "f4"]
    assert all(r.written and r.new_version for r in due)
    for key in ("f0", "f1", "f2", "f4"):
        f = store.get_flag(key)
        assert f is not None and f.version == 2 and f.bandit_weights[2] > 0.9 and f.recomputed_at
    f3 = store.get_flag("f3")
    assert f3 is not None and f3.version == 1 and f3.recomputed_at is None


def test_apply_recomputes_compare_and_set_per_flag(store: Store) -> None:
    from banditflags_server.records import RecomputeWrite

    for key in ("x", "y", "z"):
        _make(store, key)
    flags = {k: store.get_flag(k) for k in ("x", "y", "z")}
    x, y, z = (flags[k] for k in ("x", "y", "z"))
    assert x is not None and y is not None and z is not None
    store.update_flag(y, {"description": "changed meanwhile"}, None, now=time.time())
    now = time.time()
    writes = [
        RecomputeWrite("x", x.row_version, [0.2, 0.3, 0.5], now, None),
        RecomputeWrite("y", y.row_version, [0.2, 0.3, 0.5], now, None),  # stale: loses
        RecomputeWrite("z", z.row_version, [0.1, 0.1, 0.8], now, None, {"arm_state": {"exempt": ["b"]}}),
        RecomputeWrite("x", x.row_version, [0.9, 0.05, 0.05], now, None),  # second write of x: loses
    ]
    assert store.apply_recomputes(writes) == [True, False, True, False]
    got = {k: store.get_flag(k) for k in ("x", "y", "z")}
    assert got["x"] is not None and got["x"].bandit_weights == [0.2, 0.3, 0.5]
    assert got["x"].row_version == x.row_version + 1
    assert got["y"] is not None and got["y"].bandit_weights == y.bandit_weights
    assert got["z"] is not None and got["z"].arm_state == {"exempt": ["b"]}
