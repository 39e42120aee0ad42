"""A multiprocessing prefork pool sharing a client created before the fork, against the real server.

The children need no hook of their own: they re-initialise after the fork, follow the server, and
their counts are flushed by a pool finalizer when they exit (they leave through ``os._exit``, which
skips ``atexit``). The parent's own counts are sent once, by the parent.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import Counter
from typing import Any

import pytest

import banditflags

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs fork")

ARMS = {"blue": 0, "green": 1}
_client: banditflags.Client | None = None  # the children's copy is the one they use


def _decide(user: str) -> dict[str, Any]:
    assert _client is not None
    time.sleep(0.002)  # a task that takes a moment, so both children get some
    d = _client.decide("checkout-button", user, default="blue")
    return {
        "variant": d.variant,
        "reason": d.reason.value,
        "version": d.version,
        "token": d.token,
        "pid": os.getpid(),
    }


def _track(token: str) -> bool:
    assert _client is not None
    return _client.track(token)


def test_pool_children_follow_the_server_and_flush_at_exit(flags: Any) -> None:
    global _client
    flags.create("checkout-button", (0.5, 0.5))
    server = flags.server
    client = banditflags.Client(server.url, server.sdk_key, refresh_interval=0.2, flush_interval=600.0)
    _client = client
    try:
        assert client.wait_until_ready(10.0)
        parent = [client.decide("checkout-button", f"parent-{i}") for i in range(10)]  # the parent's own
        answers: list[dict[str, Any]] = []
        credited: list[str] = []
        pool = multiprocessing.get_context("fork").Pool(2)
        n = 0

        def batch(count: int) -> list[dict[str, Any]]:
            nonlocal n
            got = pool.map(_decide, [f"user-{i}" for i in range(n, n + count)], chunksize=1)
            n += count
            answers.extend(got)
            return got

        def until_every_child(pred: Any, what: str) -> None:
            done: set[int] = set()
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:  # tasks are fast: bounded in time (and so in count)
                done.update(a["pid"] for a in batch(16) if pred(a))
                if done >= pids:
                    return
                time.sleep(0.05)
            raise AssertionError(f"children {sorted(pids - done)} never served {what}")

        first = batch(200)
        pids = {a["pid"] for a in first}
        assert len(pids) == 2 and os.getpid() not in pids
        assert all(a["reason"] == "split" for a in first)
        tokens = [a["token"] for a in first[::4]]
        assert all(pool.map(_track, tokens, chunksize=1))
        credited.extend(tokens)

        flags.patch("checkout-button", {"state": "killed"})
        until_every_child(lambda a: a["reason"] == "disabled", "the kill")
        v2 = flags.patch(
            "checkout-button", {"state": "running", "policy": {"name": "fixed", "weights": [0, 1]}}
        )["version"]
        until_every_child(lambda a: a["version"] == v2 and a["reason"] == "split", "the new weights")
        assert all(a["variant"] == "green" for a in batch(100))
        assert {a["pid"] for a in answers} == pids  # the same two children all along
        assert flags.periods("checkout-button") == {}  # flush_interval is 600 s: nothing sent yet

        pool.close()
        pool.join()  # the children exit and flush their own counts
        assert client.flush(10.0)  # the parent sends its 10, once

        n_exp = Counter((a["version"], ARMS[a["variant"]]) for a in answers if a["token"])
        n_exp.update((d.version, d.arm) for d in parent)
        r_exp = Counter((int(t.split(":")[2]), int(t.split(":")[3])) for t in credited)
        expected = {k: (n_exp[k], r_exp[k]) for k in n_exp.keys() | r_exp.keys()}
        assert flags.periods("checkout-button") == expected
    finally:
        _client = None
        client.close(2.0)
