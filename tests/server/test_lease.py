"""The recompute lease: one replica recomputes, another takes over when it dies, a paused ex-holder
cannot publish (fencing). In-process on SQLite and PostgreSQL, then real server processes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import new_flag, next_write
from banditflags_server.settings import database_url
from banditflags_server.storage.lease import Fence, LeaseLost, new_holder_id
from banditflags_server.storage.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = database_url(str(tmp_path / "lease.db"))
    else:
        url = database_url(request.getfixturevalue("pg_url"))
    s = Store.open(url)
    yield s
    s.close()


def test_one_holder_at_a_time_and_takeover_after_the_ttl(store: Store) -> None:
    a, b = new_holder_id(), new_holder_id()
    t = 1_000_000.0 + time.time()  # lease times in the future of any earlier test on this database
    fa = store.acquire_lease(a, ttl=5.0, now=t)
    assert fa is not None and fa.holder == a
    assert store.acquire_lease(b, ttl=5.0, now=t + 1) is None  # held
    renewed = store.acquire_lease(a, ttl=5.0, now=t + 4)  # renewal keeps the epoch
    assert renewed == fa
    assert store.acquire_lease(b, ttl=5.0, now=t + 8) is None  # renewed until t + 9
    fb = store.acquire_lease(b, ttl=5.0, now=t + 9.5)  # ran out: taken over, new epoch
    assert fb is not None and fb.epoch == fa.epoch + 1
    assert store.acquire_lease(a, ttl=5.0, now=t + 10) is None  # the ex-holder does not get it back
    store.release_lease(fb)
    fa2 = store.acquire_lease(a, ttl=5.0, now=t + 10)  # released: free at once
    assert fa2 is not None and fa2.epoch == fb.epoch + 1
    store.release_lease(fa2)  # the PostgreSQL database is shared by the session's tests


def test_a_paused_ex_holder_cannot_publish(store: Store) -> None:
    spec = validate_new_flag({"key": "fenced", "variants": ["a", "b"], "policy": {"name": "thompson"}}, 60.0)
    rng = np.random.default_rng(1)
    flag, first = new_flag(spec, rng, time.time())
    store.create_flag(flag, first)
    a, b = new_holder_id(), new_holder_id()
    fa = store.acquire_lease(a, ttl=0.3)
    assert fa is not None
    got = store.get_flag("fenced")
    assert got is not None and got.allocation is not None
    periods = store.load_periods({"fenced": 2})["fenced"]
    write = next_write(got, got.allocation, periods, rng, time.time())
    time.sleep(0.4)  # "paused" past the lease; b takes over
    fb = store.acquire_lease(b, ttl=30.0)
    assert fb is not None
    row_version = got.row_version
    with pytest.raises(LeaseLost):
        store.apply_recomputes([write], fa)
    after = store.get_flag("fenced")
    assert after is not None and after.row_version == row_version  # nothing written
    with pytest.raises(LeaseLost):
        store.apply_recomputes([write], Fence(b, fb.epoch - 1))  # a stale epoch of the same holder
    assert store.apply_recomputes([write], fb) == [True]  # the holder's write goes through
    store.release_lease(fb)


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10.0).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(
            r"^(banditflags_recompute\w*|banditflags_recomputed_flags_total\{[^}]*\})\s+(\S+)$", line
        )
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _written(url: str) -> float:
    return _metrics(url).get('banditflags_recomputed_flags_total{result="written"}', 0.0)


def _skipped(url: str) -> float:
    return _metrics(url).get('banditflags_recomputed_flags_total{result="skipped"}', 0.0)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_replicas_share_the_recompute_and_fail_over(
    engine: str, live_server: Callable[..., Any], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = str(tmp_path / "shared.db") if engine == "sqlite" else request.getfixturevalue("pg_url")
    env = {"BANDITFLAGS_RECOMPUTE_TICK": "0.2", "BANDITFLAGS_LEADER_LEASE": "1.0"}
    first = live_server(db=db, recompute_interval=1, env=env)
    second = live_server(
        db=db, recompute_interval=1, env=env, admin_key=first.admin_key, sdk_key=first.sdk_key
    )
    admin = {"Authorization": f"Bearer {first.admin_key}"}
    for i in range(3):
        r = httpx.post(
            first.url + "/v1/flags",
            headers=admin,
            json={"key": f"lease-{i}", "variants": ["a", "b"], "recompute_interval": 1},
            timeout=10.0,
        )
        assert r.status_code == 201, r.text
    servers = [first, second]
    assert _wait(lambda: sum(_metrics(s.url).get("banditflags_recompute_leader", 0) for s in servers) == 1, 5)
    leader, standby = sorted(servers, key=lambda s: -_metrics(s.url).get("banditflags_recompute_leader", 0))
    assert _wait(lambda: _written(leader.url) >= 6, 10), leader.log()  # 3 flags, at least 2 cycles each
    # The standby never recomputed: no written and no skipped (lost compare-and-set) flag.
    assert _written(standby.url) == 0 and _skipped(standby.url) == 0
    assert _skipped(leader.url) == 0
    leader.kill()  # SIGKILL: no release; the lease must run out
    t0 = time.monotonic()
    assert _wait(lambda: _metrics(standby.url).get("banditflags_recompute_leader") == 1, 5), standby.log()
    took = time.monotonic() - t0
    assert took <= 1.0 + 0.2 + 1.0  # lease + tick, and a second of slack for a shared machine
    before = _written(standby.url)
    assert _wait(lambda: _written(standby.url) >= before + 3, 5), standby.log()  # recompute continues
