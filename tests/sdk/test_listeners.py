"""Config listeners (ready / changed / stale), ``after_fork()`` and the notifier's docstring."""

from __future__ import annotations

import doctest
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import banditflags._notify
from banditflags import Client, ConfigEvent

MakeClient = Callable[..., Client]


class Recorder:
    def __init__(self) -> None:
        self.events: list[ConfigEvent] = []
        self.threads: set[str] = set()
        self.cond = threading.Condition()

    def __call__(self, event: ConfigEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait_kinds(self, n: int, timeout: float = 10.0) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= n, timeout), self.events
            return [e.kind for e in self.events]


def test_ready_changed_stale_and_recovered(make_client: MakeClient, server: Any, build: Any) -> None:
    client = make_client(stale_after=0.3)
    rec = Recorder()
    client.add_listener(rec)
    assert client.wait_until_ready(5.0)
    assert rec.wait_kinds(1) == ["ready"]
    assert rec.events[0] == ConfigEvent("ready", 1, ("btn",))

    # a new revision changing one flag of two: `changed` names only what changed
    server.set_config(build.config(build.flag("btn"), build.flag("other"), revision=2))
    rec.wait_kinds(2)
    server.set_config(build.config(build.flag("btn", state="killed"), build.flag("other"), revision=3))
    assert rec.wait_kinds(3) == ["ready", "changed", "changed"]
    assert rec.events[1].flags_changed == ("other",) and rec.events[2] == ConfigEvent("changed", 3, ("btn",))

    server.down = True  # fetches fail; after stale_after the listener hears `stale`, once
    assert rec.wait_kinds(4)[-1] == "stale"
    time.sleep(0.3)
    assert [e.kind for e in rec.events].count("stale") == 1
    server.down = False  # a 304 confirms the config again: `ready`
    assert rec.wait_kinds(5)[-1] == "ready" and rec.events[-1].revision == 3
    assert rec.threads == {"banditflags-config"}  # never on a caller's thread

    client.remove_listener(rec)
    server.set_config(build.config(build.flag("btn"), revision=4))
    time.sleep(0.3)
    assert len(rec.events) == 5


def test_refresh_notifies_in_serverless_mode_and_a_raising_listener_is_contained(
    make_client: MakeClient, server: Any, build: Any
) -> None:
    client = make_client(background=False)
    rec = Recorder()

    def broken(event: ConfigEvent) -> None:
        raise RuntimeError("listener bug")

    client.add_listener(broken)
    client.add_listener(rec)
    assert client.refresh(2.0)
    server.set_config(build.config(build.flag("btn", version=2), revision=2))
    assert client.refresh(2.0)
    assert [e.kind for e in rec.events] == ["ready", "changed"]
    assert client.variant("btn", "u") in ("a", "b")  # the client keeps working


def test_bootstrap_is_not_ready_until_the_server_answers(
    make_client: MakeClient, server: Any, build: Any
) -> None:
    server.down = True
    client = make_client(bootstrap=build.config(), background=False)
    rec = Recorder()
    client.add_listener(rec)
    assert not client.refresh(1.0)
    assert rec.events == []  # a bootstrap never goes stale on its own: nothing to say yet
    server.down = False
    assert client.refresh(1.0)
    assert [e.kind for e in rec.events] == ["ready"]


def test_after_fork_is_a_no_op_in_the_creating_process(make_client: MakeClient, server: Any) -> None:
    client = make_client(flush_interval=60.0)
    assert client.wait_until_ready(5.0)
    client.variant("btn", "u-1")
    client.after_fork()  # same pid: nothing dropped, threads untouched
    assert client.flush(5.0) and sum(server.exposures().values()) == 1


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")
def test_forked_children_reseed_their_jitter(make_client: MakeClient) -> None:
    client = make_client()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, json.dumps(client._rng.random()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        child = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert child != client._rng.random()  # the same state would give the same first draw


def test_notify_docstring_examples() -> None:
    assert doctest.testmod(banditflags._notify).failed == 0


def test_after_fork_by_hand_draws_new_decision_ids(make_client: MakeClient) -> None:
    """uWSGI forks from C: Python's fork hooks do not run, and ``client.after_fork()`` (its postfork
    hook) must give the worker its own decision ids, or two workers' conversions collide (one is then
    taken for the other's duplicate and not credited)."""
    from banditflags import _units

    client = make_client()
    before = _units._BASE
    client._pid = -1  # as in a worker forked without Python's hooks: the pid is not the creator's
    client.after_fork()
    assert before != _units._BASE
    client.close(2.0)
