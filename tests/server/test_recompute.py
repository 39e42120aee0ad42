"""The recompute path: due flags, the loop in a real server, and a thousand flags in one cycle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import baseline_index, new_flag, period_ages
from banditflags_server.records import EventBatch, EventRow
from banditflags_server.service.recompute import recompute_due, recompute_flag
from banditflags_server.settings import database_url
from banditflags_server.storage.store import Store


def _make(store: Store, key: str, k: int = 3, **extra: Any) -> None:
    spec = validate_new_flag({"key": key, "variants": [f"v{i}" for i in range(k)], **extra}, 60.0)
    flag, first = new_flag(spec, np.random.default_rng(0), time.time())
    store.create_flag(flag, first)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store.open(database_url(str(tmp_path / "r.db")))
    yield s
    s.close()


def test_period_ages() -> None:
    assert period_ages([], 10.0) == ()
    assert period_ages([0.0, 10.0], 20.0) == (15.0, 5.0)


def test_only_due_running_flags_are_recomputed(store: Store) -> None:
    _make(store, "due", recompute_interval=1)
    _make(store, "later", recompute_interval=3600)
    _make(store, "frozen", recompute_interval=1, state="frozen")
    _make(store, "killed", recompute_interval=1, state="killed")
    results = recompute_due(store, np.random.default_rng(0), now=time.time() + 5)
    assert [r.key for r in results] == ["due"]
    assert results[0].written and not results[0].new_version  # no data: uniform again, same table
    flag = store.get_flag("due")
    assert flag is not None and flag.recomputed_at is not None
    # Just recomputed: not due again until its interval passes.
    assert recompute_due(store, np.random.default_rng(0), now=flag.recomputed_at + 0.5) == []


def test_recompute_uses_all_periods_and_moves_toward_the_winner(store: Store) -> None:
    _make(store, "f", policy={"max_step": None})
    rows = [EventRow(f"exposures[{i}]", "f", 1, i, 1000) for i in range(3)]
    store.ingest(EventBatch("batch-r1", rows, [EventRow("rewards[0]", "f", 1, 1, 200, True, 200.0, 200.0)]))
    first = recompute_flag(store, "f", np.random.default_rng(1))
    assert first.new_version and first.version == 2 and first.bandit_weights[1] > 0.9
    rows2 = [EventRow(f"exposures[{i}]", "f", 2, i, 10) for i in range(3)]
    store.ingest(EventBatch("batch-r2", rows2, []))
    second = recompute_flag(store, "f", np.random.default_rng(2))
    assert second.bandit_weights[1] > 0.9  # version 1's data still counts
    periods = store.load_periods({"f": 3})["f"]
    assert periods.versions[:2] == [1, 2] and periods.n[1].tolist() == [10, 10, 10]


def test_leader_baseline_respects_direction(store: Store) -> None:
    _make(store, "min", baseline="leader", objective={"reward": "continuous", "direction": "minimize"})
    flag = store.get_flag("min")
    assert flag is not None
    periods = store.load_periods({"min": 3})["min"]
    assert baseline_index(flag, periods) == 0  # no data: the control
    periods.n[:] = [[10, 10, 10]]
    periods.s[:] = [[50, 20, 30]]
    assert baseline_index(flag, periods) == 1


@pytest.mark.slow
def test_a_thousand_flags_in_one_cycle(store: Store) -> None:
    for i in range(1000):
        _make(store, f"flag-{i:04d}", k=10, recompute_interval=1)
    rows = [EventRow(f"exposures[{j}]", f"flag-{i:04d}", 1, j % 10, 500) for j, i in enumerate(range(1000))]
    rewards = [
        EventRow(f"rewards[{j}]", f"flag-{i:04d}", 1, j % 10, 100, True, 100.0, 100.0)
        for j, i in enumerate(range(1000))
    ]
    store.ingest(EventBatch("batch-big", rows, rewards))
    results = recompute_due(store, np.random.default_rng(0), now=time.time() + 5)
    assert len(results) == 1000 and all(r.written for r in results)  # timing: bench/bench_recompute.py


def test_the_loop_recomputes_in_a_live_server(live_server: Any) -> None:
    server = live_server(recompute_interval=1, args=["--log-level", "warning"])
    with server.client("admin") as admin, server.client("sdk") as sdk:
        body = {"key": "live", "variants": ["a", "b"], "recompute_interval": 1, "policy": {"max_step": None}}
        admin.post("/v1/flags", json=body)
        body = {
            "batch_id": "batch-live1",
            "exposures": [{"flag": "live", "version": 1, "arm": i, "count": 2000} for i in range(2)],
            "rewards": [{"flag": "live", "version": 1, "arm": 1, "count": 600, "sum": 600, "sum_sq": 600}],
        }
        assert sdk.post("/v1/events", json=body).status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            flag = admin.get("/v1/flags/live").json()
            if flag["version"] >= 2:
                break
            time.sleep(0.2)
        assert flag["version"] >= 2 and flag["weights"][1] > 0.9
        assert httpx.get(server.url + "/readyz").status_code == 200
