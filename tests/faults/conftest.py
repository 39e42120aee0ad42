"""Fixtures of the network-fault tests: one real server for the module, a fault proxy in front of it per
test, a flag of the test's own on that server, SDK clients that talk to the proxy, and the server's counts.
"""

from __future__ import annotations

import collections
import re
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer
from tests.faults.fault_proxy import FaultProxy

import banditflags
from banditflags._models import TOKEN_REASONS

#: Keep-alive comments this often, so a healthy stream is never silent for a (shortened) read timeout.
HEARTBEAT = 0.3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One ``banditflags serve`` on loopback (SQLite) for the module; each test has its own flag."""
    tmp: Path = tmp_path_factory.mktemp("netfaults")
    handle = LiveServer(
        str(tmp / "server.db"), tmp / "server.log", env={"BANDITFLAGS_STREAM_HEARTBEAT": str(HEARTBEAT)}
    ).start()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client("admin") as client:
        yield client


@pytest.fixture
def proxy(server: LiveServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the server (no fault set)."""
    with FaultProxy(server.url, max_lifetime=120.0) as p:
        yield p


def create_binary_flag(admin: httpx.Client, key: str) -> str:
    """Create ``key``: a binary flag with two arms, a fixed 50/50 split, one conversion per decision."""
    body = {
        "key": key,
        "variants": ["blue", "green"],
        "control": "blue",
        "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
        "policy": {"name": "fixed", "weights": [0.5, 0.5]},
    }
    r = admin.post("/v1/flags", json=body)
    assert r.status_code == 201, r.text
    return key


@pytest.fixture
def flag(admin: httpx.Client, request: pytest.FixtureRequest) -> str:
    """A new binary flag (:func:`create_binary_flag`) named after the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    crc = zlib.crc32(request.node.nodeid.encode())
    return create_binary_flag(admin, f"nf-{slug[5:40].strip('-')}-{crc:08x}")


@pytest.fixture
def make_client(proxy: FaultProxy, server: LiveServer) -> Iterator[Callable[..., banditflags.Client]]:
    """``make_client(**kwargs)``: a Client of the proxy with fast polls and flushes; closed at the end."""
    made: list[banditflags.Client] = []

    def make(**kwargs: Any) -> banditflags.Client:
        kwargs.setdefault("refresh_interval", 0.2)
        kwargs.setdefault("flush_interval", 0.2)
        kwargs.setdefault("request_timeout", 1.0)
        kwargs.setdefault("telemetry", "off")
        key = kwargs.pop("sdk_key", server.sdk_key)
        client = banditflags.Client(proxy.url, key, **kwargs)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close(timeout=2.0)


Counts = dict[tuple[int, int], tuple[int, int]]


def server_counts(admin: httpx.Client, key: str) -> Counts:
    """(version, arm) -> (exposures, rewards) as the server stored them."""
    r = admin.get(f"/v1/flags/{key}/stats")
    assert r.status_code == 200, r.text
    out: Counts = {}
    for p in r.json()["periods"]:
        for arm, (n, rewards) in enumerate(zip(p["n"], p["rewards"], strict=True)):
            if n or rewards:
                out[(p["version"], arm)] = (int(n), int(rewards))
    return out


class Traffic:
    """What one client decided and tracked, per (version, arm), to compare with the server's counts."""

    def __init__(self, client: banditflags.Client, flag: str) -> None:
        self.client = client
        self.flag = flag
        self.exposures: collections.Counter[tuple[int, int]] = collections.Counter()
        self.rewards: collections.Counter[tuple[int, int]] = collections.Counter()
        self.slowest = 0.0  # the longest single decide()/track() call, seconds
        self.reasons: collections.Counter[str] = collections.Counter()
        self.last_reason = ""
        self._n = 0

    def run(self, n: int, convert_every: int = 3) -> None:
        """``n`` decisions for new units; every ``convert_every``-th one converts (tracked once)."""
        for _ in range(n):
            self._n += 1
            unit = f"{self.flag}-u{self._n}"
            t0 = time.perf_counter()
            d = self.client.decide(self.flag, unit)
            self.slowest = max(self.slowest, time.perf_counter() - t0)
            self.reasons[str(d.reason)] += 1
            self.last_reason = str(d.reason)
            if d.reason not in TOKEN_REASONS or d.arm is None or d.version is None:
                continue  # no exposure recorded: no config yet, or the flag is killed
            cell = (d.version, d.arm)
            self.exposures[cell] += 1
            if convert_every and self._n % convert_every == 0:
                t0 = time.perf_counter()
                ok = self.client.track(d)
                self.slowest = max(self.slowest, time.perf_counter() - t0)
                assert ok
                self.rewards[cell] += 1

    def probe(self) -> str:
        """One more decision (counted like the others); its reason, e.g. to wait for a kill to arrive."""
        self.run(1, convert_every=0)
        return self.last_reason

    def expected(self) -> Counts:
        return {c: (n, self.rewards[c]) for c, n in self.exposures.items()}

    @property
    def decided(self) -> int:
        return sum(self.exposures.values())


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until true; fail naming ``what`` after ``timeout`` s (a functional bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
