"""gunicorn --preload with 2 workers running examples/flask_app.py against the real server.

The client is created (and its threads started) in the master before the workers fork. Every worker
must answer at once while the server is down (bounded start-up), pick up the configuration when the
server comes back, follow a kill switch and a weight change, and the server's counts must equal the
decisions and conversions the workers answered: nothing duplicated or lost across the fork, nothing
lost when the workers exit.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("gunicorn")
pytest.importorskip("flask")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs fork")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARMS = {"blue": 0, "green": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Traffic:
    """Requests to the app, remembering every answer (to compute the counts the server must have)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=10.0)
        self.answers: list[dict[str, Any]] = []
        self.credited: list[str] = []
        self.n = 0

    def one(self, i: int) -> dict[str, Any]:
        r = self.http.get(self.url + "/api/checkout", headers={"X-Unit-Id": f"user-{i}"})
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        assert answer["unit"] == f"user-{i}"
        return answer

    def batch(self, count: int) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(self.one, range(self.n, self.n + count)))
        self.n += count
        self.answers.extend(got)
        return got

    def until_every_worker(self, pids: set[int], pred: Callable[[dict[str, Any]], bool], what: str) -> None:
        """Send batches until every worker answered with ``pred`` true (bounded in count and time)."""
        done: set[int] = set()
        deadline = time.monotonic() + 60.0  # bounded in time, and so in count
        while time.monotonic() < deadline:
            for a in self.batch(16):
                if pred(a):
                    done.add(a["pid"])
            if done >= pids:
                return
            time.sleep(0.05)
        raise AssertionError(f"workers {sorted(pids - done)} never served {what}")

    def convert(self, token: str) -> None:
        r = self.http.post(self.url + "/convert", json={"token": token})
        assert r.status_code == 200 and r.json()["credited"] is True, r.text
        self.credited.append(token)

    def expected(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(version, arm) -> (exposures, rewards) implied by the answers and the conversions."""
        n = Counter((a["version"], ARMS[a["variant"]]) for a in self.answers if a["token"])
        r = Counter((int(t.split(":")[2]), int(t.split(":")[3])) for t in self.credited)
        return {k: (n[k], r[k]) for k in n.keys() | r.keys()}


def test_preloaded_workers_follow_the_server_and_count_exactly(
    flags: Any, spawn: Any, env_for: Any, wait: Any, python: str
) -> None:
    server = flags.server
    flags.create("checkout-button", (0.5, 0.5))
    server.stop()  # down while the app starts: start-up must not wait for it
    port = free_port()
    env = env_for(
        server,
        BANDITFLAGS_REFRESH_INTERVAL="0.2",
        BANDITFLAGS_FLUSH_INTERVAL="1.0",
        BANDITFLAGS_STARTUP_TIMEOUT="0.3",
    )
    args = [python, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}"]
    args += ["--timeout", "20", "--graceful-timeout", "20", "--chdir", str(EXAMPLES), "flask_app:app"]
    gunicorn = spawn(args, env, "gunicorn")
    pids: set[int] = set()

    def booted() -> bool:
        pids.update(int(p) for p in re.findall(r"Booting worker with pid: (\d+)", gunicorn.log()))
        return len(pids) == 2

    wait(booted, 30.0, "two gunicorn workers")
    app = Traffic(f"http://127.0.0.1:{port}")
    wait(lambda: _answers(app), 30.0, "the app to answer")

    # server down, nothing cached: every worker answers the default at once, records nothing
    app.until_every_worker(pids, lambda a: a["reason"] == "error" and a["variant"] is None, "the default")

    server.start()  # same port, database and keys
    app.until_every_worker(pids, lambda a: a["reason"] == "split", "the allocation once the server is back")
    first = app.batch(200)
    assert {a["variant"] for a in first} == {"blue", "green"}
    for a in first[::4]:
        app.convert(a["token"])
    # every worker keeps flushing on its own: the server catches up without any exit
    wait(lambda: flags.periods("checkout-button") == app.expected(), 30.0, "the workers' periodic flushes")

    flags.patch("checkout-button", {"state": "killed"})
    app.until_every_worker(pids, lambda a: a["reason"] == "disabled" and a["variant"] == "blue", "the kill")
    killed = app.batch(50)
    assert all(a["reason"] == "disabled" and a["token"] is None for a in killed)

    changed = flags.patch(
        "checkout-button", {"state": "running", "policy": {"name": "fixed", "weights": [0, 1]}}
    )
    v2 = changed["version"]
    assert changed["weights"] == [0.0, 1.0] and v2 > first[0]["version"]
    app.until_every_worker(pids, lambda a: a["version"] == v2 and a["reason"] == "split", "the new weights")
    after = app.batch(200)
    assert all(a["variant"] == "green" and a["version"] == v2 for a in after)
    for a in after[::5]:
        app.convert(a["token"])
    assert {a["pid"] for a in app.answers} == pids  # only the two forked workers answered

    assert gunicorn.stop() == 0  # graceful: each worker flushes what it still holds at exit
    log = gunicorn.log()
    assert "Traceback" not in log, log
    expected = app.expected()
    assert sum(n for n, _ in expected.values()) > 400
    assert flags.periods("checkout-button") == expected


def _answers(app: Traffic) -> bool:
    try:
        app.answers.append(app.one(app.n))  # counted like any other answer
    except httpx.HTTPError:
        return False
    app.n += 1
    return True
