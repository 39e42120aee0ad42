"""Group commit (issue 14): batches counted in one transaction each group, each acknowledged only after
its group's commit, with its own result or error; exact counts under concurrency, on SQLite and
PostgreSQL, across two writers (replicas) sharing decision ids, and when the commit fails."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import new_flag
from banditflags_server.errors import ValidationError
from banditflags_server.records import EventBatch, EventRow, IngestResult
from banditflags_server.storage import schema as db
from banditflags_server.storage.events import count_group
from banditflags_server.storage.group_commit import CommitFailed, GroupCommitter
from banditflags_server.storage.store import Store


def _make(store: Store, key: str) -> None:
    spec = validate_new_flag({"key": key, "variants": ["a", "b"]}, 60.0)
    flag, first = new_flag(spec, np.random.default_rng(0), time.time())
    store.create_flag(flag, first)


def _batch(
    batch_id: str, flag: str, exposures: int, arm: int = 0, ids: list[str] | None = None
) -> EventBatch:
    rewards = []
    if ids is not None:
        n = len(ids)
        rewards = [EventRow("rewards[0]", flag, 1, arm, n, True, float(n), float(n), None, ids)]
    return EventBatch(batch_id, [EventRow("exposures[0]", flag, 1, arm, exposures)], rewards)


def _totals(store: Store, key: str) -> tuple[int, float, int]:
    """(exposures, conversions, stats rows) of ``key``."""
    a = db.arm_stats
    with db.read_tx(store.engine) as conn:
        rows = conn.execute(sa.select(a.c.n, a.c.s).where(a.c.flag == key)).all()
    return sum(int(n) for n, _ in rows), sum(float(s) for _, s in rows), len(rows)


def test_a_group_counts_each_batch_once_and_rejects_only_the_bad_one(store: Store) -> None:
    _make(store, "grp")
    bad = EventBatch("bad-batch", [EventRow("exposures[0]", "grp", 1, 7, 5)], [])  # arm 7 of 2
    group = [
        _batch("batch-a", "grp", 10, ids=["00000000000000a1", "00000000000000a2"]),
        bad,
        _batch("batch-a", "grp", 10),  # the same id again within the group: a duplicate
        _batch("batch-b", "grp", 5, ids=["00000000000000a2"]),  # a conversion id seen earlier in the group
    ]
    with db.write_tx(store.engine) as conn:
        out = count_group(conn, group, time.time())
    assert isinstance(out[0], IngestResult) and not out[0].duplicate
    assert isinstance(out[1], ValidationError) and out[1].field == "exposures[0].arm"
    assert isinstance(out[2], IngestResult) and out[2].duplicate
    assert isinstance(out[3], IngestResult) and out[3].duplicates == 1
    assert _totals(store, "grp") == (15, 2.0, 1)  # coalesced into one row; the repeat taken out
    with db.read_tx(store.engine) as conn:
        ids = {r[0] for r in conn.execute(sa.select(db.batches.c.batch_id))}
    assert "bad-batch" not in ids and {"batch-a", "batch-b"} <= ids  # the rejected one left nothing


def test_concurrent_submitters_are_grouped_and_counted_exactly(store: Store) -> None:
    _make(store, "busy")
    committer = GroupCommitter(store.engine)
    futures: list[Future[IngestResult]] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        for i in range(50):
            fut = committer.submit(_batch(f"w{worker}-{i:04d}", "busy", 3))
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(timeout=60) for f in futures]
    committer.close()
    assert len(results) == 400 and not any(r.duplicate for r in results)
    assert _totals(store, "busy")[0] == 1200
    assert committer.batches == 400 and committer.groups < 400  # batches shared commits


def test_a_failed_commit_fails_every_batch_of_the_group_and_counts_nothing(store: Store) -> None:
    _make(store, "full")
    committer = GroupCommitter(store.engine)
    committer.submit(_batch("before-0001", "full", 1)).result(timeout=30)
    # A real failure of the database's own: every write refused from now on (a read-only database).
    readonly = (
        "PRAGMA query_only = 1" if store.dialect == "sqlite" else "SET default_transaction_read_only = on"
    )

    def refuse(conn: Any, *_: Any) -> None:
        conn.exec_driver_sql(readonly)

    sa.event.listen(store.engine, "engine_connect", refuse)
    store.engine.dispose()  # pooled connections are made again, with the setting
    futures = [committer.submit(_batch(f"during-{i:04d}", "full", 1)) for i in range(20)]
    for f in futures:
        with pytest.raises(CommitFailed):
            f.result(timeout=30)
    sa.event.remove(store.engine, "engine_connect", refuse)
    store.engine.dispose()
    assert _totals(store, "full")[0] == 1  # none of the failed group was counted
    # The SDK retries with the same ids: now they count, once.
    for i in range(20):
        assert not committer.submit(_batch(f"during-{i:04d}", "full", 1)).result(timeout=30).duplicate
    committer.close()
    assert _totals(store, "full")[0] == 21


def test_two_writers_sharing_decision_ids_count_each_once(store: Store) -> None:
    """Two replicas' writers on one database, the same conversions sent to both (an SDK retry that the
    load balancer sent elsewhere, a webhook delivered twice): every decision id counts once."""
    _make(store, "race")
    other = Store(db.create_engine(str(store.engine.url.render_as_string(hide_password=False))))
    writers = [GroupCommitter(store.engine), GroupCommitter(other.engine)]
    futures: list[Future[IngestResult]] = []
    for i in range(60):
        ids = [f"{i:08x}{j:08x}" for j in range(3)]
        for w, writer in enumerate(writers):
            futures.append(writer.submit(_batch(f"r{i:03d}-{w}", "race", 1, ids=ids)))
    results = [f.result(timeout=120) for f in futures]
    for writer in writers:
        writer.close()
    other.close()
    assert sum(r.duplicates for r in results) == 180  # each of the 180 ids was repeated once
    exposures, conversions, _ = _totals(store, "race")
    assert (exposures, conversions) == (120, 180.0)


def test_a_flag_deleted_while_the_writer_holds_it_fails_one_group_then_its_rows_are_ignored(
    store: Store,
) -> None:
    """The writer keeps the flags it checked rows against for a second (TargetsCache). A flag deleted in
    that second: the next group naming it fails whole on the stats' foreign key (nothing of it counted,
    the SDK retries), the writer forgets what it held, and the retry finds the flag gone."""
    _make(store, "keep")
    _make(store, "doomed")
    committer = GroupCommitter(store.engine)
    assert not committer.submit(_batch("first", "doomed", 3)).result(timeout=30).duplicate
    assert store.delete_flag("doomed")
    with pytest.raises(CommitFailed):
        committer.submit(_batch("late", "doomed", 4)).result(timeout=30)
    retried = committer.submit(_batch("late", "doomed", 4)).result(timeout=30)
    assert not retried.duplicate and retried.exposures == 0 and retried.ignored
    assert not committer.submit(_batch("other", "keep", 5)).result(timeout=30).duplicate
    committer.close()
    assert _totals(store, "doomed") == (0, 0.0, 0)
    assert _totals(store, "keep")[0] == 5


def test_the_writer_looks_up_a_version_it_has_not_seen(store: Store) -> None:
    """A row naming a version the writer has not checked yet (a recompute made it) is looked up, not
    refused from the cache; one that does not exist is ignored, every time."""
    _make(store, "grow")
    committer = GroupCommitter(store.engine)
    assert committer.submit(_batch("v1", "grow", 2)).result(timeout=30).exposures == 1  # rows counted
    unknown = EventBatch("v9", [EventRow("exposures[0]", "grow", 9, 0, 5)], [])
    for attempt in range(2):  # cached or not: an unknown version is ignored
        result = committer.submit(dataclasses.replace(unknown, batch_id=f"v9-{attempt}")).result(timeout=30)
        assert result.exposures == 0 and result.ignored
    flag = store.get_flag("grow")
    assert flag is not None
    with db.write_tx(store.engine) as conn:  # what a recompute writes: version 2 of the table
        row = conn.execute(sa.select(db.allocations).where(db.allocations.c.flag == "grow")).mappings().one()
        conn.execute(sa.insert(db.allocations).values({**row, "version": 2}))
    v2 = EventBatch("v2", [EventRow("exposures[0]", "grow", 2, 1, 7)], [])
    assert committer.submit(v2).result(timeout=30).exposures == 1
    committer.close()
    assert _totals(store, "grow")[0] == 9
