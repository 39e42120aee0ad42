"""After os.fork(): the child answers from the inherited snapshot, sends only its own events, and the
parent's unsent counts are sent once (by the parent)."""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from banditflags import Client, Reason

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work`` in a forked child and return what it reported (through a pipe; the child never
    returns into pytest)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            report = work()
            with os.fdopen(write_fd, "w") as fh:
                json.dump(report, fh)
            code = 0
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, raw
    result: dict[str, Any] = json.loads(raw)
    return result


def _our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("banditflags-")]


def test_fork(server: Any) -> None:
    client = Client(
        "http://bf.test",
        "bf_sdk_test",
        transport=server.transport,
        refresh_interval=60.0,
        flush_interval=60.0,
    )
    try:
        assert client.wait_until_ready(5.0)
        for i in range(10):
            client.variant("btn", f"parent-{i}")
        config_requests_before = len(server.config_requests)

        def child() -> dict[str, Any]:
            d = client.decide("btn", "child-0")
            report: dict[str, Any] = {"reason": d.reason.value, "variant": d.variant}
            for i in range(1, 5):
                client.variant("btn", f"child-{i}")
            report["flushed"] = client.flush(5.0)
            report["exposures"] = sum(server.exposures().values())
            report["threads"] = len(_our_threads())
            client.close(1.0)
            return report

        report = in_child(child)
        # the child answered at once from the inherited snapshot (split, not provider_not_ready)
        assert report["reason"] == Reason.SPLIT.value and report["variant"] in ("a", "b")
        # its own flush delivered exactly its own 5 exposures, none of the parent's 10
        assert report["flushed"] is True and report["exposures"] == 5
        assert report["threads"] == 3  # poll, stream and events: restarted lazily in the child
        # the parent still owns and sends its 10 exposures, once
        assert client.flush(5.0)
        assert sum(server.exposures().values()) == 10
        assert len(server.config_requests) == config_requests_before  # the child's fetches are its own
    finally:
        client.close(1.0)


class _UwsgiMaster:
    """A stand-in for the ``uwsgi`` module inside a uWSGI master (the process that forks from C)."""

    def __init__(self, master: int) -> None:
        self.master = master

    def masterpid(self) -> int:
        return self.master


def test_a_uwsgi_master_runs_no_threads_and_each_worker_starts_its_own(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uWSGI forks from C after its master released the GIL: a thread of ours holding it at that moment
    # would hang the new worker, so in the master the client must run none.
    monkeypatch.setitem(sys.modules, "uwsgi", _UwsgiMaster(os.getpid()))
    assert _our_threads() == []
    client = Client("http://bf.test", "bf_sdk_test", transport=server.transport, flush_interval=60.0)
    try:
        assert client.wait_until_ready(5.0)  # fetched synchronously
        for i in range(10):
            assert client.variant("btn", f"master-{i}") in ("a", "b")
        assert client.decide("btn", "master-x").reason is Reason.SPLIT
        assert _our_threads() == []
        assert client.flush(5.0)  # delivered synchronously, without a worker thread
        assert sum(server.exposures().values()) == 11

        def worker() -> dict[str, Any]:  # masterpid() is no longer our pid
            for i in range(4):
                client.variant("btn", f"worker-{i}")
            report = {"threads": len(_our_threads()), "flushed": client.flush(5.0)}
            report["exposures"] = sum(server.exposures().values())
            client.close(1.0)
            return report

        report = in_child(worker)
        assert report == {"threads": 3, "flushed": True, "exposures": 11 + 4}
        assert _our_threads() == []  # still none in the master
    finally:
        client.close(1.0)


def test_a_fork_without_hooks_is_noticed_on_first_use(server: Any) -> None:
    # uWSGI without py-call-osafterfork or a postfork hook: Python's fork hooks never ran in the worker.
    client = Client("http://bf.test", "bf_sdk_test", transport=server.transport, flush_interval=60.0)
    try:
        assert client.refresh(5.0)  # config in hand, no thread started (as in a uWSGI master)
        assert _our_threads() == []
        client._pid = -1  # what a worker forked from C sees: the client was made in another process
        client.variant("btn", "w-0")
        assert client._pid == os.getpid() and len(_our_threads()) == 3
        assert client.flush(5.0) and sum(server.exposures().values()) == 1
    finally:
        client.close(1.0)
