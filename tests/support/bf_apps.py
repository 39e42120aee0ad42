"""Traffic against an example web app served by forked workers (gunicorn, uWSGI tests)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

ARMS = {"blue": 0, "green": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Traffic:
    """Requests to the app, remembering every answer (to compute the counts the server must have)."""

    def __init__(self, url: str, *, keepalive: bool = True, concurrency: int = 8) -> None:
        self.url = url
        self.concurrency = concurrency
        # keepalive=False for servers that close every connection (uWSGI's http-socket): a reused
        # connection that the server closed meanwhile would fail the next request.
        limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
        self.http = httpx.Client(timeout=10.0, limits=limits)
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
        with ThreadPoolExecutor(self.concurrency) as pool:
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


def answers(app: Traffic) -> bool:
    try:
        app.answers.append(app.one(app.n))  # counted like any other answer
    except httpx.HTTPError:
        return False
    app.n += 1
    return True


def app_down_at_start(flags: Any, env_for: Any) -> tuple[int, dict[str, str]]:
    """Create the app's flag, stop the server (the app must start without it) and return a free port for
    the app and its environment: fast polling and flushing, a short start-up wait."""
    flags.create("checkout-button", (0.5, 0.5))
    flags.server.stop()
    env = env_for(
        flags.server,
        BANDITFLAGS_REFRESH_INTERVAL="0.2",
        BANDITFLAGS_FLUSH_INTERVAL="1.0",
        BANDITFLAGS_STARTUP_TIMEOUT="0.3",
    )
    return free_port(), env


def follow_the_server(flags: Any, app: Traffic, pids: set[int], wait: Any) -> None:
    """The forked workers' life against ``flags.server`` (stopped before the app started): defaults while
    it is down, the split once it is back, periodic flushes, a kill switch, a weight change. Leaves the
    app running; the caller stops it and compares ``flags.periods`` with ``app.expected()``."""
    server = flags.server
    wait(lambda: answers(app), 30.0, "the app to answer")

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
