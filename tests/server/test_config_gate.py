"""``GET /v1/config``'s in-memory gate: one revision read per poll interval, however many SDKs poll at
once, and a write through this process is always seen by the next read."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import AppClients


def _counting_revision(app: AppClients, delay: float) -> list[int]:
    store = app.store
    original = store.revision
    calls: list[int] = []

    def revision() -> Any:
        calls.append(1)
        time.sleep(delay)  # a slow database: requests arriving meanwhile must not all read too
        return original()

    store.revision = revision
    return calls


def test_concurrent_polls_share_one_revision_read(app: AppClients) -> None:
    assert app.admin.post("/v1/flags", json={"key": "gate", "variants": ["a", "b"]}).status_code == 201
    etag = app.sdk.get("/v1/config").headers["etag"]
    calls = _counting_revision(app, delay=0.2)
    app.raw.app.state.ctx.revision_read_at = -math.inf  # the gate has expired
    start = threading.Barrier(16)

    def poll(_: int) -> int:
        start.wait()
        status: int = app.sdk.get("/v1/config", headers={"If-None-Match": etag}).status_code
        return status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(poll, range(16)))
    assert statuses == [304] * 16
    # Without the single read, each of the 16 would hop to a thread and read the revision.
    assert 1 <= len(calls) <= 2, len(calls)


def test_a_write_through_this_process_is_read_by_the_next_poll(app: AppClients) -> None:
    assert app.admin.post("/v1/flags", json={"key": "gate", "variants": ["a", "b"]}).status_code == 201
    before = app.sdk.get("/v1/config").headers["etag"]
    calls = _counting_revision(app, delay=0.0)
    assert app.admin.patch("/v1/flags/gate", json={"state": "killed"}).status_code == 200
    after = app.sdk.get("/v1/config", headers={"If-None-Match": before})
    assert after.status_code == 200 and after.headers["etag"] != before
    assert calls, "the poll after a local write read the revision"
    assert after.json()["flags"][0]["state"] == "killed"
