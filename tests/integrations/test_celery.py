"""A celery prefork pool (2 children, Redis broker) running examples/celery_worker.py.

The client is created in the worker's main process before the pool forks. Every child must follow a
kill switch and a weight change on the server, and after a warm shutdown the server's counts must
equal the decisions and rewards the tasks answered.
"""

from __future__ import annotations

import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

celery = pytest.importorskip("celery")
pytest.importorskip("redis")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the prefork pool needs fork")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BROKER = "redis://127.0.0.1:6379/0"
ARMS = {"blue": 0, "green": 1}


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1.0):
            return True
    except OSError:
        return False


class Tasks:
    def __init__(self, queue: str) -> None:
        self.app = celery.Celery("test", broker=BROKER, backend=BROKER)
        self.queue = queue
        self.answers: list[dict[str, Any]] = []
        self.credited: list[str] = []
        self.n = 0

    def batch(self, count: int) -> list[dict[str, Any]]:
        pending = [
            self.app.send_task("banditflags_example.checkout", args=[f"user-{i}"], queue=self.queue)
            for i in range(self.n, self.n + count)
        ]
        self.n += count
        got = [r.get(timeout=30) for r in pending]
        self.answers.extend(got)
        return got

    def until_every_child(self, pids: set[int], pred: Callable[[dict[str, Any]], bool], what: str) -> None:
        done: set[int] = set()
        deadline = time.monotonic() + 60.0  # bounded in time, and so in count
        while time.monotonic() < deadline:
            done.update(a["pid"] for a in self.batch(16) if pred(a))
            if done >= pids:
                return
            time.sleep(0.05)
        raise AssertionError(f"children {sorted(pids - done)} never served {what}")

    def convert(self, tokens: list[str]) -> None:
        pending = [
            self.app.send_task("banditflags_example.convert", args=[t], queue=self.queue) for t in tokens
        ]
        assert all(r.get(timeout=30) is True for r in pending)
        self.credited.extend(tokens)

    def expected(self) -> dict[tuple[int, int], tuple[int, int]]:
        n = Counter((a["version"], ARMS[a["variant"]]) for a in self.answers if a["token"])
        r = Counter((int(t.split(":")[2]), int(t.split(":")[3])) for t in self.credited)
        return {k: (n[k], r[k]) for k in n.keys() | r.keys()}


@pytest.mark.skipif(not _redis_up(), reason="Redis is not reachable at 127.0.0.1:6379 (the celery broker)")
def test_prefork_children_follow_the_server_and_count_exactly(
    flags: Any, spawn: Any, env_for: Any, wait: Any, python: str
) -> None:
    flags.create("checkout-button", (0.5, 0.5))
    queue = f"bf-test-{uuid.uuid4().hex[:12]}"  # other test runs may share this Redis
    env = env_for(
        flags.server,
        BANDITFLAGS_REFRESH_INTERVAL="0.2",
        BANDITFLAGS_FLUSH_INTERVAL="600",  # only the children's exit flush sends anything
        CELERY_BROKER_URL=BROKER,
        EXAMPLE_QUEUE=queue,
    )
    args = [python, "-m", "celery", "--workdir", str(EXAMPLES), "-A", "celery_worker", "worker"]
    args += ["--pool", "prefork", "--concurrency", "2", "-Q", queue, "--without-gossip", "--without-mingle"]
    args += ["--without-heartbeat", "--loglevel", "INFO", "-n", f"{queue}@localhost"]
    worker = spawn(args, env, "celery")
    tasks = Tasks(queue)
    try:
        pids: set[int] = set()

        def children() -> bool:
            stats = tasks.app.control.inspect(destination=[f"{queue}@localhost"], timeout=1.0).stats() or {}
            for s in stats.values():
                pids.update(s["pool"]["processes"])
            return len(pids) == 2

        wait(children, 60.0, f"the celery worker's two children:\n{worker.log()}")
        tasks.until_every_child(pids, lambda a: a["reason"] == "split", "the allocation")
        first = tasks.batch(100)
        assert {a["variant"] for a in first} == {"blue", "green"}
        tasks.convert([a["token"] for a in first[::4]])

        flags.patch("checkout-button", {"state": "killed"})
        tasks.until_every_child(pids, lambda a: a["reason"] == "disabled", "the kill")

        changed = flags.patch(
            "checkout-button", {"state": "running", "policy": {"name": "fixed", "weights": [0, 1]}}
        )
        v2 = changed["version"]
        tasks.until_every_child(
            pids, lambda a: a["version"] == v2 and a["reason"] == "split", "the new weights"
        )
        after = tasks.batch(100)
        assert all(a["variant"] == "green" for a in after)
        tasks.convert([a["token"] for a in after[::5]])
        assert {a["pid"] for a in tasks.answers} == pids
        assert flags.periods("checkout-button") == {}  # nothing sent yet: all of it rides on the exit flush

        assert worker.stop(timeout=60.0) == 0  # warm shutdown: each child flushes in worker_process_shutdown
        assert "Traceback" not in worker.log(), worker.log()
        expected = tasks.expected()
        assert sum(n for n, _ in expected.values()) >= 200
        assert flags.periods("checkout-button") == expected
    finally:
        tasks.app.close()
