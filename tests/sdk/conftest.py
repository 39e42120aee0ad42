"""Shared fixtures of the SDK tests: config payload builders and an in-process fake server."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest


def make_flag(key: str = "btn", **overrides: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "key": key,
        "salt": f"salt-{key}",
        "state": "running",
        "exploration": 1.0,
        "version": 1,
        "variants": [{"key": "a", "value": "A"}, {"key": "b", "value": {"color": "#00f"}}],
        "control": "a",
        "weights": [0.5, 0.5],
        "table": [[0, 5000], [1, 5000]],
        "objective": {
            "reward": "binary",
            "direction": "maximize",
            "unit": "decision",
            "credit_window": 86400,
        },
        "policy": "thompson",
    }
    flag.update(overrides)
    return flag


def make_config(*flags: dict[str, Any], revision: int = 1) -> dict[str, Any]:
    return {
        "schema": 1,
        "revision": revision,
        "generated_at": "2026-11-27T23:10:00Z",
        "flags": list(flags) if flags else [make_flag()],
    }


class FakeServer:
    """``/v1/config`` with ETags and ``/v1/events`` that records batches; behaviour is switchable."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.lock = threading.Lock()
        self.config: dict[str, Any] = config if config is not None else make_config()
        self.config_override: Callable[[httpx.Request], httpx.Response] | None = None
        self.events_status: int = 202
        self.events_statuses: list[int] = []  # consumed first, then events_status
        self.down = False  # every request fails with a connection error
        self.config_requests: list[httpx.Request] = []
        self.event_requests: list[dict[str, Any]] = []  # every POST body, retries included
        self.accepted: dict[str, dict[str, Any]] = {}  # batch_id -> body, as a server dedups

    def set_config(self, config: dict[str, Any]) -> None:
        with self.lock:
            self.config = copy.deepcopy(config)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("server down", request=request)
        assert request.headers["authorization"] == "Bearer bf_sdk_test"
        if request.url.path == "/v1/config":
            with self.lock:
                self.config_requests.append(request)
                if self.config_override is not None:
                    return self.config_override(request)
                etag = f'"{self.config.get("revision")}"'
                if request.headers.get("if-none-match") == etag:
                    return httpx.Response(304, headers={"ETag": etag})
                return httpx.Response(200, json=self.config, headers={"ETag": etag})
        if request.url.path == "/v1/events":
            body = json.loads(request.content)
            with self.lock:
                self.event_requests.append(body)
                status = self.events_statuses.pop(0) if self.events_statuses else self.events_status
                if 200 <= status < 300:
                    self.accepted.setdefault(body["batch_id"], body)
            return httpx.Response(status, json={"batch_id": body["batch_id"]})
        return httpx.Response(404)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def exposures(self) -> dict[tuple[str, int, int], int]:
        out: dict[tuple[str, int, int], int] = {}
        with self.lock:
            for body in self.accepted.values():
                for row in body["exposures"]:
                    key = (row["flag"], row["version"], row["arm"])
                    out[key] = out.get(key, 0) + row["count"]
        return out

    def rewards(self) -> dict[tuple[str, int, int], tuple[int, float, float]]:
        out: dict[tuple[str, int, int], tuple[int, float, float]] = {}
        with self.lock:
            for body in self.accepted.values():
                for row in body["rewards"]:
                    key = (row["flag"], row["version"], row["arm"])
                    c, s, ss = out.get(key, (0, 0.0, 0.0))
                    out[key] = (c + row["count"], s + row["sum"], ss + row["sum_sq"])
        return out


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def make_client(server: FakeServer) -> Iterator[Callable[..., Any]]:
    from banditflags import Client

    clients: list[Client] = []

    def factory(**kwargs: Any) -> Client:
        kwargs.setdefault("transport", server.transport)
        kwargs.setdefault("refresh_interval", 0.05)
        kwargs.setdefault("flush_interval", 0.05)
        kwargs.setdefault("request_timeout", 2.0)
        client = Client("http://bf.test", "bf_sdk_test", **kwargs)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.close(timeout=1.0)


@pytest.fixture
def build() -> Any:
    """Payload builders for tests (test modules cannot import conftest under importlib mode)."""
    import types

    return types.SimpleNamespace(flag=make_flag, config=make_config, FakeServer=FakeServer)


@pytest.fixture(params=["compiled", "python"])
def track_impl(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once with the compiled fast paths (``banditflags._speedups``: track()'s, and
    decide()'s inside a recording span) and once with the Python code alone (BANDITFLAGS_NO_SPEEDUPS=1):
    the clients the test makes take one or the other. Modules that test what track() records use it
    (``pytestmark``), and the span path's tests in test_telemetry.py."""
    if request.param == "python":
        monkeypatch.setenv("BANDITFLAGS_NO_SPEEDUPS", "1")
    else:
        monkeypatch.delenv("BANDITFLAGS_NO_SPEEDUPS", raising=False)
    return str(request.param)
