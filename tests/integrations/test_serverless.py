"""banditflags.serverless in a simulated AWS Lambda runtime (its own process, frozen between
invocations with SIGSTOP), against the real server behind a loopback proxy that can answer slowly
or not at all. Events are delivered exactly once or kept for the next invocation; no thread runs."""

from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import banditflags.serverless
from banditflags import Client
from banditflags.serverless import Serverless

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="freezes the function with SIGSTOP")


class Proxy:
    """HTTP pass-through to the server. ``events_delay``: seconds to hold the answer to a
    ``POST /v1/events`` *after* the server committed it (the client times out, the batch landed).
    ``down``: answer 503 to everything without forwarding."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.events_delay = 0.0
        self.down = False
        self.config_gets = 0
        self.event_posts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if proxy.down:
                    self._answer(503, b'{"error": {"code": "unavailable"}}', {})
                    return
                if self.path.startswith("/v1/config"):
                    proxy.config_gets += 1
                if self.path.startswith("/v1/events"):
                    proxy.event_posts += 1
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                r = httpx.request(
                    method, proxy.upstream + self.path, content=body, headers=headers, timeout=30
                )
                if self.path.startswith("/v1/events") and proxy.events_delay:
                    time.sleep(proxy.events_delay)
                keep = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "etag")}
                self._answer(r.status_code, r.content, keep)

            def _answer(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up waiting

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(flags: Any) -> Iterator[Proxy]:
    p = Proxy(flags.server.url)
    yield p
    p.close()


class Function:
    """One function container: a runtime process, frozen between invocations."""

    def __init__(self, module: Path, name: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "lambda_runtime.py"), str(module), name],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._read() == {"ready": True}
        self.frozen = False
        self.freeze()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the runtime died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        out: dict[str, Any] = json.loads(line)
        return out

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def invoke(self, event: dict[str, Any], remaining_ms: int = 3000) -> dict[str, Any]:
        assert self.proc.stdin is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.stdin.write(json.dumps({"event": event, "remaining_ms": remaining_ms}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        self.freeze()
        assert answer["threads"] == [], answer  # nothing left running while frozen
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def functions() -> Iterator[list[Function]]:
    started: list[Function] = []
    yield started
    for f in started:
        f.close()


def exposures(flags: Any) -> int:
    return sum(n for n, _ in flags.periods("checkout-button").values())


def rewards(flags: Any) -> int:
    return sum(r for _, r in flags.periods("checkout-button").values())


def users(a: int, b: int) -> list[str]:
    return [f"user-{i}" for i in range(a, b)]


def test_cold_warm_slow_raising_and_late_invocations(
    flags: Any, proxy: Proxy, env_for: Any, functions: list[Function], wait: Any
) -> None:
    flags.create("checkout-button", (0.5, 0.5))
    env = env_for(flags.server, BANDITFLAGS_URL=proxy.url, FN_TTL="600")
    fn = Function(HERE / "lambda_functions.py", "handler", env)
    functions.append(fn)

    # cold start: one config fetch, decisions, a synchronous flush before the answer
    first = fn.invoke({"users": users(0, 10)})["result"]
    assert {d["reason"] for d in first["decisions"]} == {"split"}
    assert exposures(flags) == 10 and proxy.config_gets == 1

    # warm, the server answers after the deadline: the batch landed, the client does not know it
    proxy.events_delay = 2.0
    fn.invoke({"users": users(10, 20)}, remaining_ms=1000)
    proxy.events_delay = 0.0
    wait(lambda: exposures(flags) == 20, 30.0, "the late batch to land on the server")
    nxt = fn.invoke({"users": users(20, 25)})["result"]
    assert nxt["previous_flush_ok"] is False and nxt["pending_batches"] == 1  # kept for this invocation
    assert exposures(flags) == 25  # re-sent with the same batch_id: counted once, not twice

    # the deadline is already inside the margin: nothing is sent, everything is kept
    fn.invoke(
        {"users": users(25, 30), "tokens": [d["token"] for d in first["decisions"][:4]]}, remaining_ms=100
    )
    assert exposures(flags) == 25 and rewards(flags) == 0
    fn.invoke({})
    assert exposures(flags) == 30 and rewards(flags) == 4

    # the handler raises: what it recorded is still flushed, the error reaches the runtime
    answer = fn.invoke({"users": users(30, 33), "fail": True})
    assert answer["error"] == "RuntimeError: the handler failed after deciding"
    assert exposures(flags) == 33

    # the server is down: the function answers from its snapshot; the events wait for the next one
    proxy.down = True
    down = fn.invoke({"users": users(33, 40)}, remaining_ms=1500)["result"]
    assert {d["reason"] for d in down["decisions"]} == {"split"}
    proxy.down = False
    back = fn.invoke({})["result"]
    assert back["previous_flush_ok"] is False
    assert exposures(flags) == 40
    assert proxy.config_gets == 1  # warm invocations within the TTL never fetched the config


def test_ttl_refreshes_and_bootstrap_cold_start(
    flags: Any, proxy: Proxy, env_for: Any, functions: list[Function], tmp_path: Path
) -> None:
    flags.create("checkout-button", (0.5, 0.5))
    config = flags.server.client("sdk").get("/v1/config").json()
    boot = tmp_path / "config.json"
    boot.write_text(json.dumps(config))

    # a cold start with the server unreachable answers from the bootstrap file, reason `cached`
    proxy.down = True
    env = env_for(flags.server, BANDITFLAGS_URL=proxy.url, BANDITFLAGS_BOOTSTRAP=str(boot), FN_TTL="0.2")
    env["FN_RETRY_AFTER"] = "0"
    fn = Function(HERE / "lambda_functions.py", "handler", env)
    functions.append(fn)
    cold = fn.invoke({"users": users(0, 5)}, remaining_ms=1200)["result"]
    assert {d["reason"] for d in cold["decisions"]} == {"cached"}
    assert all(d["token"] for d in cold["decisions"])
    proxy.down = False

    # the TTL expired: the next invocation fetches (and then delivers the cold start's events too)
    flags.patch("checkout-button", {"state": "killed"})
    time.sleep(0.3)  # longer than FN_TTL
    warm = fn.invoke({"users": users(5, 8)})["result"]
    assert {d["reason"] for d in warm["decisions"]} == {"disabled"}
    assert exposures(flags) == 5
    time.sleep(0.3)
    again = fn.invoke({})["result"]
    assert again["refreshes"] == 3  # cold (failed), then one per expired TTL

    # the same with the config in the environment variable as JSON text
    env2 = env_for(
        flags.server, BANDITFLAGS_URL="http://127.0.0.1:9", BANDITFLAGS_BOOTSTRAP=json.dumps(config)
    )
    fn2 = Function(HERE / "lambda_functions.py", "handler", env2)
    functions.append(fn2)
    d = fn2.invoke({"users": ["user-1"]}, remaining_ms=600)["result"]["decisions"][0]
    assert d["reason"] == "cached" and d["variant"] in ("blue", "green")


def test_the_example_handler_runs_cold_and_warm(flags: Any, env_for: Any, functions: list[Function]) -> None:
    flags.create("checkout-button", (0.5, 0.5))
    fn = Function(EXAMPLES / "lambda_handler.py", "handler", env_for(flags.server))
    functions.append(fn)
    shown = fn.invoke({"user": "u-1"})["result"]
    assert shown["reason"] == "split" and shown["variant"] in ("blue", "green")
    assert fn.invoke({"token": shown["token"]})["result"] == {"credited": True}
    assert flags.periods("checkout-button") == {(1, {"blue": 0, "green": 1}[shown["variant"]]): (1, 1)}


# -- in-process unit tests of the wrapper ---------------------------------------------------------


def test_docstring_examples() -> None:
    assert doctest.testmod(banditflags.serverless, optionflags=doctest.ELLIPSIS).failed == 0


def test_refuses_a_background_client_and_bad_settings() -> None:
    c = Client("http://bf.test", "k")
    try:
        with pytest.raises(ValueError, match="background=False"):
            Serverless(c)
    finally:
        c.close(0.1)
    with pytest.raises(ValueError, match="ttl"):
        Serverless(base_url="http://bf.test", sdk_key="k", ttl=0)
    with pytest.raises(ValueError, match="BANDITFLAGS_URL"):
        Serverless(base_url="", sdk_key="")


def test_generic_and_async_handlers_flush_within_their_budget() -> None:
    import asyncio

    posted: list[dict[str, Any]] = []
    config = {"schema": 1, "revision": 1, "flags": []}

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config":
            return httpx.Response(200, json=config, headers={"ETag": '"1"'})
        posted.append(json.loads(request.content))
        return httpx.Response(202, json={})

    flags = Serverless(base_url="http://bf", sdk_key="k", transport=httpx.MockTransport(server))

    @flags.handler
    def job(x: int) -> int:
        flags.client.variant("nope", "u")
        return x * 2

    @flags.handler
    async def ajob(x: int) -> int:
        return x + 1

    assert job(2) == 4 and asyncio.run(ajob(1)) == 2
    assert flags.invocations == 2 and flags.refreshes == 1 and flags.last_flush_ok is True
    assert job.__name__ == "job"  # functools.wraps
    assert flags.end(budget=0.0) is False  # no budget: nothing attempted
