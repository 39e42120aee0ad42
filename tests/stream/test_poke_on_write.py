"""PokeOnWrite: which requests count as config writes (they wake the watcher and the config gate)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from banditflags_server.api.stream import PokeOnWrite, StreamHub


async def _app(scope: Any, receive: Any, send: Any) -> None:
    status = 422 if scope["path"] == "/v1/flags/bad" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _call(mw: PokeOnWrite, method: str, path: str) -> None:
    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    asyncio.run(mw({"type": "http", "method": method, "path": path}, receive, send))


@pytest.mark.parametrize(
    ("method", "path", "counted"),
    [
        ("PATCH", "/v1/flags/checkout", 1),  # a control change
        ("POST", "/v1/flags", 1),
        ("DELETE", "/v1/flags/checkout", 1),
        ("POST", "/console/flags/checkout/kill", 1),
        ("POST", "/v1/events", 0),  # event batches never change the config
        ("GET", "/v1/config", 0),
        ("PATCH", "/v1/flags/bad", 0),  # rejected: nothing changed
    ],
)
def test_which_requests_count_as_config_writes(method: str, path: str, counted: int) -> None:
    hub = StreamHub(poll=0.1, heartbeat=15.0, max_streams=10)
    _call(PokeOnWrite(_app, hub), method, path)
    assert hub.writes == counted
