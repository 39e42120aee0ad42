"""The Flask and FastAPI examples against the real server: sticky unit ids (cookie or header),
a decision per request, a reward credited in a later request with the decision token; the async app
never does I/O on the event loop; the unit-id middleware on its own."""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import banditflags.web
from banditflags import Client
from banditflags.web import ASGIUnitIdMiddleware, UnitIdMiddleware, current_unit_id, unit_id_from

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARMS = {"blue": 0, "green": 1}


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, server: Any) -> ModuleType:
    monkeypatch.setenv("BANDITFLAGS_URL", server.url)
    monkeypatch.setenv("BANDITFLAGS_SDK_KEY", server.sdk_key)
    monkeypatch.setenv("BANDITFLAGS_STARTUP_TIMEOUT", "10")
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # importable by name (Django's ROOT_URLCONF)
    spec.loader.exec_module(module)
    return module


class RecordingTransport(httpx.HTTPTransport):
    """The real HTTP transport, noting which thread made each request."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[threading.Thread] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.threads.append(threading.current_thread())
        return super().handle_request(request)


@pytest.fixture
def flask_example(flags: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    pytest.importorskip("flask")
    flags.create("checkout-button", (0.5, 0.5))
    module = load_example("flask_app", monkeypatch, flags.server)
    yield module
    module.client.close(2.0)


def test_flask_example_sticky_cookie_header_and_reward(flask_example: ModuleType, flags: Any) -> None:
    app = flask_example.app.test_client()
    first = app.get("/api/checkout")
    cookie = first.headers["Set-Cookie"]
    assert re.match(r"bf_uid=[0-9a-f]{32}; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax", cookie)
    unit = first.json["unit"]
    assert first.json["reason"] == "split" and first.json["variant"] in ARMS
    for _ in range(3):  # the cookie keeps the browser on its variant
        again = app.get("/api/checkout")
        assert "Set-Cookie" not in again.headers
        assert (again.json["unit"], again.json["variant"]) == (unit, first.json["variant"])
    api = app.get("/api/checkout", headers={"X-Unit-Id": "mobile-7"})  # the header wins
    assert api.json["unit"] == "mobile-7" and "Set-Cookie" not in api.headers
    page = app.get("/")
    # the page is a new decision of the same unit: same flag, version and arm, its own decision id
    assert b"<button" in page.data and first.json["token"].rsplit(":", 1)[0].encode() in page.data

    converted = app.post("/convert", data={"token": first.json["token"]})  # a later request
    assert converted.status_code == 200 and converted.json["credited"] is True
    assert app.post("/convert", json={"token": "garbage"}).status_code == 400
    assert flask_example.client.flush(10.0)
    arm = ARMS[first.json["variant"]]
    periods = flags.periods("checkout-button")
    assert sum(n for n, _ in periods.values()) == 6 and periods[(1, arm)][1] == 1


def test_django_example_sticky_cookie_and_reward(flags: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django")
    flags.create("checkout-button", (0.5, 0.5))
    example = load_example("django_app", monkeypatch, flags.server)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=example.application), base_url="http://t") as app:
            first = app.get("/api/checkout")
            assert first.status_code == 200, first.text
            assert first.headers["set-cookie"].startswith("bf_uid=")
            unit, variant = first.json()["unit"], first.json()["variant"]
            assert first.json()["reason"] == "split" and variant in ARMS
            for _ in range(3):  # httpx keeps the cookie: the visitor stays on its variant
                again = app.get("/api/checkout")
                assert "set-cookie" not in again.headers
                assert (again.json()["unit"], again.json()["variant"]) == (unit, variant)
            converted = app.post("/convert", json={"token": first.json()["token"]})  # a later request
            assert converted.status_code == 200 and converted.json()["credited"] is True
            assert app.post("/convert", json={"token": "garbage"}).status_code == 400
        assert example.client.flush(10.0)
        periods = flags.periods("checkout-button")
        assert sum(n for n, _ in periods.values()) == 4 and periods[(1, ARMS[variant])][1] == 1
    finally:
        example.client.close(2.0)


def test_fastapi_example_never_does_io_on_the_event_loop(flags: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    flags.create("checkout-button", (0.5, 0.5))
    example = load_example("fastapi_app", monkeypatch, flags.server)
    transport = RecordingTransport()
    server = flags.server
    client = Client(server.url, server.sdk_key, transport=transport, flush_interval=0.1, refresh_interval=0.1)
    app = example.create_app(client)
    answers: list[dict[str, Any]] = []

    async def scenario() -> threading.Thread:
        loop_thread = threading.current_thread()
        async with app.router.lifespan_context(app):
            asgi = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=asgi, base_url="http://app") as http:
                first = await http.get("/api/checkout")
                assert first.cookies.get("bf_uid") == first.json()["unit"]
                answers.append(first.json())
                for i in range(20):
                    r = await http.get("/api/checkout", headers={"X-Unit-Id": f"user-{i}"})
                    answers.append(r.json())
                sticky = await http.get("/api/checkout")  # the cookie jar sends bf_uid back
                assert sticky.json()["unit"] == first.json()["unit"] and "set-cookie" not in sticky.headers
                answers.append(sticky.json())
                ok = await http.post("/convert", json={"token": first.json()["token"]})
                assert ok.status_code == 200 and ok.json() == {"credited": True}
                assert (await http.post("/convert", json={})).status_code == 400
                await asyncio.sleep(0.5)  # let the client's threads poll and flush meanwhile
        return loop_thread

    loop_thread = asyncio.run(scenario())
    # the lifespan's wait, the polls, the flushes and the final close all ran off the event loop
    assert transport.threads and loop_thread not in transport.threads
    allowed = {"banditflags-config", "banditflags-stream", "banditflags-events", "asyncio_0"}
    assert {t.name for t in transport.threads} <= allowed
    n = sum(1 for a in answers if a["token"])
    periods = flags.periods("checkout-button")  # close() in the lifespan flushed everything
    assert sum(x for x, _ in periods.values()) == n == 22
    assert sum(r for _, r in periods.values()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_fastapi_example_under_uvicorn(flags: Any, spawn: Any, env_for: Any, wait: Any, python: str) -> None:
    pytest.importorskip("fastapi")
    flags.create("checkout-button", (0.5, 0.5))
    port = _free_port()
    env = env_for(flags.server, BANDITFLAGS_FLUSH_INTERVAL="60")
    uvicorn = spawn(
        [python, "-m", "uvicorn", "--app-dir", str(EXAMPLES), "--port", str(port), "fastapi_app:app"],
        env,
        "uvicorn",
    )
    url = f"http://127.0.0.1:{port}"
    got: list[dict[str, Any]] = []

    def up() -> bool:
        try:
            got.append(httpx.get(url + "/api/checkout", headers={"X-Unit-Id": "u-0"}).json())
        except httpx.HTTPError:
            return False
        return True

    wait(up, 30.0, "uvicorn")
    with httpx.Client(base_url=url) as http:
        got += [http.get("/api/checkout", headers={"X-Unit-Id": f"u-{i}"}).json() for i in range(1, 30)]
        assert http.post("/convert", json={"token": got[0]["token"]}).json() == {"credited": True}
    # graceful: the lifespan's aclose() flushes (flush_interval is 60 s); recent uvicorn re-raises SIGTERM
    assert uvicorn.stop() in (0, -signal.SIGTERM), uvicorn.log()
    assert "Application shutdown complete" in uvicorn.log()
    periods = flags.periods("checkout-button")
    assert sum(n for n, _ in periods.values()) == sum(1 for a in got if a["token"]) == 30
    assert periods[(1, ARMS[got[0]["variant"]])][1] == 1


# -- the middleware on its own ---------------------------------------------------------------------


def test_docstring_examples() -> None:
    assert doctest.testmod(banditflags.web, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize(
    ("header", "cookie", "expected"),
    [
        ("h-1", "bf_uid=c-1", "h-1"),
        (None, "a=b; bf_uid=c-1; x=y", "c-1"),
        (None, 'bf_uid="c-2"', "c-2"),
        ("", "bf_uid=c-1", "c-1"),
        ("has space", None, None),
        ("x" * 129, None, None),
        (None, "bf_uid=a;b", "a"),
        (None, "other=1", None),
        ("ünïcode", None, None),
        (None, None, None),
    ],
)
def test_unit_id_from(header: str | None, cookie: str | None, expected: str | None) -> None:
    assert unit_id_from(header, cookie) == expected


def test_asgi_middleware_sets_the_cookie_once_and_passes_lifespan() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], scope.get("banditflags.unit_id"), current_unit_id()))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
            await send({"type": "http.response.body", "body": b"ok"})

    mw = ASGIUnitIdMiddleware(app, new_id=lambda: "new-1", secure=True)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    async def run() -> None:
        await mw({"type": "lifespan"}, receive, send)
        await mw({"type": "http", "headers": []}, receive, send)
        await mw({"type": "http", "headers": [(b"cookie", b"bf_uid=old-7")]}, receive, send)
        await mw({"type": "http", "headers": [(b"x-unit-id", b"api-1")]}, receive, send)

    asyncio.run(run())
    assert seen == [
        ("lifespan", None, None),
        ("http", "new-1", "new-1"),
        ("http", "old-7", "old-7"),
        ("http", "api-1", "api-1"),
    ]
    starts = [m for m in sent if m["type"] == "http.response.start"]
    cookies = [[v for k, v in m["headers"] if k == b"set-cookie"] for m in starts]
    assert cookies[0] == [b"bf_uid=new-1; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax; Secure"]
    assert cookies[1:] == [[], []]
    assert current_unit_id() is None


def test_wsgi_middleware_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="cookie_name"):
        UnitIdMiddleware(lambda e, s: [], cookie_name="bad name")
    with pytest.raises(ValueError, match="samesite"):
        UnitIdMiddleware(lambda e, s: [], samesite="lax")


def test_async_helpers_run_off_the_loop() -> None:
    config = {"schema": 1, "revision": 1, "flags": []}
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(threading.current_thread().name)
        return httpx.Response(200, json=config, headers={"ETag": '"1"'})

    client = Client("http://bf", "k", transport=httpx.MockTransport(handler))

    async def run() -> tuple[bool, bool, str]:
        ready = await banditflags.web.await_ready(client, 5.0)
        flushed = await banditflags.web.aflush(client, 5.0)
        await banditflags.web.aclose(client, 1.0)
        return ready, flushed, threading.current_thread().name

    ready, flushed, loop_name = asyncio.run(run())
    assert ready and flushed and loop_name not in calls
