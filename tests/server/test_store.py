"""The store on SQLite and PostgreSQL: migrations, revision, upserts, batch idempotency, version races."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import sqlalchemy as sa

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import new_flag, plan
from banditflags_server.errors import ValidationError
from banditflags_server.records import Allocation, EventBatch, EventRow, Stale
from banditflags_server.storage import schema as db
from banditflags_server.storage.audit import AuditEntry
from banditflags_server.storage.segments import Segment
from banditflags_server.storage.store import Store, hash_key


def _make(store: Store, key: str = "f1", variants: int = 3) -> None:
    spec = validate_new_flag({"key": key, "variants": [f"v{i}" for i in range(variants)]}, 60.0)
    flag, first = new_flag(spec, np.random.default_rng(0), time.time())
    store.create_flag(flag, first)


def _exposure(flag: str, version: int, arm: int, count: int, i: int = 0) -> EventRow:
    return EventRow(f"exposures[{i}]", flag, version, arm, count)


def _reward(flag: str, version: int, arm: int, count: int, s: float, i: int = 0) -> EventRow:
    return EventRow(f"rewards[{i}]", flag, version, arm, count, True, s, s)


def test_migrations_are_idempotent(url: str) -> None:
    for _ in range(3):
        s = Store.open(url)
        assert s.schema_version() == db.SCHEMA_VERSION
        assert s.revision() == 0
        s.close()
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {"meta", "api_keys", "flags", "allocations", "arm_stats", "batches"} <= names


def test_migrating_concurrently_is_safe(url: str) -> None:
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            Store.open(url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = Store.open(url)
    assert s.schema_version() == db.SCHEMA_VERSION
    s.close()


def test_revision_bumps_on_every_config_change(store: Store) -> None:
    assert store.revision() == 0
    _make(store)
    assert store.revision() == 1
    flag = store.get_flag("f1")
    assert flag is not None
    assert store.update_flag(flag, {"state": "killed"}, None, now=time.time())
    assert store.revision() == 2
    store.ingest(EventBatch("batch-0001", [_exposure("f1", 1, 0, 5)], []))
    assert store.revision() == 2  # stats are not part of the config
    assert store.delete_flag("f1")
    assert store.revision() == 3
    assert not store.delete_flag("f1")
    assert store.revision() == 3


def test_upserts_add_up_and_batches_count_once(store: Store) -> None:
    _make(store)
    r1 = store.ingest(
        EventBatch(
            "batch-0001",
            [_exposure("f1", 1, 2, 5), _exposure("f1", 1, 2, 7, 1)],
            [_reward("f1", 1, 2, 3, 3.0)],
        )
    )
    assert (r1.duplicate, r1.exposures, r1.rewards) == (False, 2, 1)
    r2 = store.ingest(EventBatch("batch-0002", [_exposure("f1", 1, 2, 10)], [_reward("f1", 1, 2, 1, 1.0)]))
    assert not r2.duplicate
    again = store.ingest(EventBatch("batch-0002", [_exposure("f1", 1, 2, 10)], []))
    assert again.duplicate and again.exposures == 0
    p = store.load_periods({"f1": 3})["f1"]
    assert p.versions == [1]
    assert p.n.tolist() == [[0, 0, 22]]
    assert p.r.tolist() == [[0, 0, 4]]
    assert p.s.tolist() == [[0, 0, 4.0]]


def test_unknown_flags_and_versions_are_ignored(store: Store) -> None:
    _make(store)
    r = store.ingest(EventBatch("batch-0003", [_exposure("nope", 1, 0, 1), _exposure("f1", 9, 0, 1, 1)], []))
    assert r.ignored == [
        {"field": "exposures[0]", "reason": "unknown flag"},
        {"field": "exposures[1]", "reason": "unknown version"},
    ]
    assert r.exposures == 0


def test_a_bad_row_rejects_the_whole_batch(store: Store) -> None:
    _make(store)
    batch = EventBatch("batch-0004", [_exposure("f1", 1, 0, 4), _exposure("f1", 1, 3, 1, 1)], [])
    with pytest.raises(ValidationError) as info:
        store.ingest(batch)
    assert info.value.field == "exposures[1].arm"
    with pytest.raises(ValidationError) as info:
        store.ingest(EventBatch("batch-0004", [], [_reward("f1", 1, 0, 2, 3.0)]))
    assert info.value.field == "rewards[0].sum"
    assert store.load_periods({"f1": 3})["f1"].n.sum() == 0
    # The batch id was not recorded: a corrected retry counts.
    assert not store.ingest(EventBatch("batch-0004", [_exposure("f1", 1, 0, 4)], [])).duplicate


def test_two_concurrent_writers_never_make_two_tables_for_one_version(url: str, store: Store) -> None:
    _make(store)
    other = Store.open(url)  # a second "process": its own engine and pool
    try:
        flag_a = store.get_flag("f1")
        flag_b = other.get_flag("f1")
        assert flag_a is not None and flag_b is not None and flag_a.allocation is not None
        now = time.time()
        allocs = [
            plan(flag_a, flag_a.allocation, [0.8, 0.1, 0.1], 0, "recompute", now),
            plan(flag_b, flag_a.allocation, [0.1, 0.1, 0.8], 0, "recompute", now),
        ]
        results: list[bool] = []
        barrier = threading.Barrier(2)

        def write(s: Store, f: object, a: Allocation | None) -> None:
            barrier.wait()
            results.append(s.update_flag(f, {"bandit_weights": a.bandit_weights}, a, now=now))  # type: ignore[arg-type, union-attr]

        threads = [
            threading.Thread(target=write, args=(s, f, a))
            for s, f, a in ((store, flag_a, allocs[0]), (other, flag_b, allocs[1]))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, True]
        history = store.history("f1")
        assert [a.version for a in history] == [1, 2]
        current = store.get_flag("f1")
        assert current is not None and current.allocation is not None
        assert current.allocation.weights == history[-1].weights
        assert current.bandit_weights == history[-1].bandit_weights
    finally:
        other.close()


def test_racing_recomputes_keep_one_history(url: str, store: Store) -> None:
    """Many threads over two engines recompute and patch one flag; versions stay 1..N without gaps."""
    from banditflags_server.service.recompute import recompute_flag

    _make(store)
    store.ingest(
        EventBatch(
            "batch-0005", [_exposure("f1", 1, i, 500, i) for i in range(3)], [_reward("f1", 1, 2, 200, 200.0)]
        )
    )
    other = Store.open(url)
    try:

        def work(s: Store, seed: int) -> None:
            recompute_flag(s, "f1", np.random.default_rng(seed))

        threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate([store, other] * 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        versions = [a.version for a in store.history("f1")]
        assert versions == list(range(1, len(versions) + 1))
        flag = store.get_flag("f1")
        assert flag is not None and flag.version == versions[-1]
    finally:
        other.close()


def test_keys_are_stored_hashed(store: Store) -> None:
    made = store.ensure_initial_keys()
    assert made is not None
    admin, sdk = made
    assert admin.startswith("bf_admin_") and sdk.startswith("bf_sdk_")
    assert store.ensure_initial_keys() is None  # only once
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(db.api_keys)).all()
    assert admin not in str(rows) and sdk not in str(rows)
    store.sync_settings_keys(["a-key"], ["s-key1", "s-key2"])
    store.sync_settings_keys(["a-key2"], [])  # rotation revokes the old env keys
    assert store.key_kind(hash_key("a-key")) is None
    assert store.key_kind(hash_key("a-key2")) == "admin"
    assert store.key_kind(hash_key("s-key1")) is None
    # Keys of a kind given through settings revoke the generated key of that kind (printed in clear once).
    assert store.key_kind(hash_key(admin)) is None
    assert store.key_kind(hash_key(sdk)) is None  # the sdk keys given first revoked it


def _race(n: int, target: Callable[[int], object]) -> list[object]:
    """``target(i)`` on ``n`` threads released together; their results (or the exceptions raised)."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = target(i)
        except BaseException as exc:  # reported by the caller's assertions
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_replicas_starting_together_register_their_keys_once(store: Store) -> None:
    """Several replicas starting at once on one new database each register the settings' keys (or the
    generated pair): none may fail on another's insert, and one generated pair is made, not one each."""
    for round_ in range(5):
        admin, sdk = [f"admin-{round_}"], [f"sdk-{round_}"]
        results = _race(6, lambda i, admin=admin, sdk=sdk: store.sync_settings_keys(admin, sdk))
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert store.all_keys() == {
            hash_key(f"admin-{round_}"): "admin", hash_key(f"sdk-{round_}"): "sdk"
        }  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(sa.delete(db.api_keys))
    results = _race(6, lambda i: store.ensure_initial_keys())
    assert not [r for r in results if isinstance(r, BaseException)], results
    made = [r for r in results if r is not None]
    assert len(made) == 1 and len(store.all_keys()) == 2


def test_if_match_is_checked_on_the_locked_row(store: Store) -> None:
    """An update or delete with a stale If-Match raises Stale inside its transaction and writes
    nothing; with the current ETag (or none) it writes, on both databases."""

    def entry(key: str, action: str) -> AuditEntry:
        return AuditEntry(key, time.time(), "test", action, None, None, "", kind="segment")

    _make(store)
    seg = Segment("beta", included=["a"])
    store.create_segment(seg, entry("beta", "create"))
    seen = store.get_segment("beta")
    assert seen is not None and seen.etag == seg.etag
    changed = dataclasses.replace(seen, included=["a", "b"])
    assert store.update_segment(changed, None, if_match=seen.etag)  # current: written
    with pytest.raises(Stale) as stale:
        store.update_segment(dataclasses.replace(seen, included=[]), None, if_match=seen.etag)
    assert stale.value.args[0] == changed.etag
    after = store.get_segment("beta")
    assert after is not None and after.included == ["a", "b"]
    with pytest.raises(Stale):
        store.delete_segment("beta", entry("beta", "delete"), if_match=seen.etag)
    assert store.get_segment("beta") is not None
    assert store.delete_segment("beta", entry("beta", "delete"), if_match=f'"x", {changed.etag}')

    flag = store.get_flag("f1")
    assert flag is not None
    with pytest.raises(Stale):
        store.delete_flag("f1", if_match='"not-its-etag"')
    assert store.get_flag("f1") is not None
    assert store.delete_flag("f1", if_match=flag.etag) and store.get_flag("f1") is None
