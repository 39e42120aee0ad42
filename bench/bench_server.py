"""The server under load on loopback: ``/v1/config`` 304 polls and ``/v1/events`` batches per second
and p99 latency, against a bare Starlette/uvicorn hello-world (bench/hello_app.py) on the same machine.

Each server runs alone (one uvicorn process, the same uvicorn settings), with the load generator on the
other core: ``wrk`` (Debian's package: ``apt-get install wrk``) with 32 connections for ``--seconds``
each, or, without wrk, a Python/httpx asyncio generator (slower: it measures itself as much as the
server; the output says which one ran). Runs:

- ``GET /v1/config`` with the current ``If-None-Match`` (every answer is a 304, as for a polling SDK)
  vs ``GET /`` on the hello-world;
- ``POST /v1/events``: a batch of 3 exposure and 3 reward rows with a fresh ``batch_id`` per request
  (each one is committed to SQLite with ``synchronous=FULL`` before the 202) vs ``POST /events`` on the
  hello-world (parses the same JSON body and answers 202).

Targets (DESIGN.md §8): config polls at least half the hello-world's throughput (issue 4), event
batches at least a quarter of the hello-world's POST (issue 14), on SQLite and on PostgreSQL (``--db``).

``--ids N`` (wrk only) adds two runs of the cost of de-duplicating conversions (issue 11): batches with
N conversions (3 reward rows of N/3, plus the 3 exposure rows) without decision ids, then the same with
their ids, every id new (each one looked up and inserted into the conversions table).

Run: bench/.venv/bin/python bench/bench_server.py [--seconds 10] [--connections 32] [--ids 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN, SDK = "bf_admin_" + secrets.token_urlsafe(24), "bf_sdk_" + secrets.token_urlsafe(24)
ROWS = {
    "exposures": [{"flag": "bench", "version": 1, "arm": a, "count": 10 + a} for a in range(3)],
    "rewards": [
        {"flag": "bench", "version": 1, "arm": a, "count": 2, "sum": 1.0, "sum_sq": 1.0} for a in range(3)
    ],
}
LUA_EVENTS = """
math.randomseed(os.time() + os.clock() * 1e6)
local prefix = string.format("w%08x", math.random(0, 0x7fffffff))
local n = 0
local rows = [=[@ROWS@]=]
request = function()
  n = n + 1
  local body = '{"batch_id":"' .. prefix .. string.format("%012d", n) .. '","sdk":"wrk",' .. rows .. '}'
  local headers = {["Authorization"] = "Bearer @KEY@", ["Content-Type"] = "application/json"}
  return wrk.format("POST", "@PATH@", headers, body)
end
"""

# Batches of 3 reward rows of K conversions each, with K fresh decision ids per row when @IDS@ is true.
LUA_CONVERSIONS = """
math.randomseed(os.time() + os.clock() * 1e6)
local prefix = string.format("w%08x", math.random(0, 0x7fffffff))
local did_prefix = string.format("%08x", math.random(0, 0x7fffffff))
local n, d = 0, 0
local k, with_ids = @K@, @IDS@
local exposures = [=[@EXPOSURES@]=]
local function row(arm)
  local r = '{"flag":"bench","version":1,"arm":' .. arm .. ',"count":' .. k
  r = r .. ',"sum":' .. k .. ',"sum_sq":' .. k
  if with_ids then
    local ids = {}
    for i = 1, k do
      d = d + 1
      ids[i] = string.format('"%s%08x"', did_prefix, d)
    end
    r = r .. ',"ids":[' .. table.concat(ids, ",") .. ']'
  end
  return r .. '}'
end
request = function()
  n = n + 1
  local body = '{"batch_id":"' .. prefix .. string.format("%012d", n) .. '","sdk":"wrk",' .. exposures
    .. ',"rewards":[' .. row(0) .. ',' .. row(1) .. ',' .. row(2) .. ']}'
  local headers = {["Authorization"] = "Bearer @KEY@", ["Content-Type"] = "application/json"}
  return wrk.format("POST", "@PATH@", headers, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_wrk(out: str) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx/3xx count) from wrk --latency output."""
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([0-9.]+)(us|ms|s)\b", out)
    assert m is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, float(m.group(1)) * scale, int(bad.group(1)) if bad else 0


def run_wrk(
    url: str, seconds: int, conns: int, headers: dict[str, str], lua: str | None
) -> tuple[float, float, int]:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    script = None
    if lua is not None:
        fd, script = tempfile.mkstemp(suffix=".lua")
        with os.fdopen(fd, "w") as fh:
            fh.write(lua)
        cmd += ["-s", script]
    try:
        out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    finally:
        if script:
            os.unlink(script)
    return parse_wrk(out)


def run_python(
    url: str, seconds: int, conns: int, headers: dict[str, str], post: bool
) -> tuple[float, float, int]:
    """The fallback generator: ``conns`` asyncio tasks on one httpx client, for ``seconds``."""

    async def main() -> tuple[float, float, int]:
        lat: list[float] = []
        bad = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=5.0) as client:

            async def worker() -> None:
                nonlocal bad
                while time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    if post:
                        r = await client.post(url, json={"batch_id": uuid.uuid4().hex, "sdk": "py", **ROWS})
                    else:
                        r = await client.get(url)
                    lat.append(time.perf_counter() - t0)
                    bad += r.status_code >= 400

            t0 = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(conns)))
            elapsed = time.monotonic() - t0
        lat.sort()
        return len(lat) / elapsed, lat[int(0.99 * (len(lat) - 1))] * 1000, bad

    return asyncio.run(main())


def load(
    url: str, args: argparse.Namespace, headers: dict[str, str], post_path: str | None
) -> tuple[float, float, int]:
    if args.generator == "wrk":
        lua = None
        if post_path is not None:
            key = headers.get("Authorization", "").split(" ")[-1]
            lua = LUA_EVENTS.replace("@ROWS@", json.dumps(ROWS)[1:-1]).replace("@PATH@", post_path)
            lua = lua.replace("@KEY@", key)
            headers = {}
        return run_wrk(url, args.seconds, args.connections, headers, lua)
    return run_python(url, args.seconds, args.connections, headers, post_path is not None)


def fresh_postgres(cluster_url: str) -> tuple[str, Callable[[], None]]:
    """A new database on the PostgreSQL server of ``cluster_url`` and a function that drops it."""
    import sqlalchemy as sa

    name = f"bf_bench_{uuid.uuid4().hex[:10]}"
    url = sa.engine.make_url(cluster_url.replace("postgresql://", "postgresql+psycopg://", 1))
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()

    return url.set(database=name, drivername="postgresql").render_as_string(hide_password=False), drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--generator", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    ap.add_argument("--ids", type=int, default=0, help="conversions per batch for the de-duplication runs")
    ap.add_argument(
        "--db",
        default="",
        help="a PostgreSQL URL (a fresh database is made in it and dropped); default SQLite",
    )
    args = ap.parse_args()
    if args.ids and args.generator != "wrk":
        raise SystemExit("--ids needs wrk")
    print(f"load generator: {args.generator}, {args.connections} connections, {args.seconds} s per run")
    tmp = tempfile.mkdtemp(prefix="bf-bench-server-")
    results: dict[str, tuple[float, float, int]] = {}

    port = free_port()
    hello = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "hello_app.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/", hello)
        results["hello GET /"] = load(base + "/", args, {}, None)
        results["hello POST /events"] = load(base + "/events", args, {"Authorization": "Bearer x"}, "/events")
    finally:
        stop(hello)

    db_url, drop = fresh_postgres(args.db) if args.db else ("", None)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env.update(BANDITFLAGS_ADMIN_KEY=ADMIN, BANDITFLAGS_SDK_KEY=SDK)
    log = open(os.path.join(tmp, "server.log"), "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "banditflags_server", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", db_url or os.path.join(tmp, "bench.db"), "--recompute-interval", "3600"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/healthz", server)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = httpx.post(base + "/v1/flags", headers=admin, json={"key": "bench", "variants": ["a", "b", "c"]})
        assert r.status_code == 201, r.text
        sdk = {"Authorization": f"Bearer {SDK}"}
        etag = httpx.get(base + "/v1/config", headers=sdk).headers["etag"]
        assert httpx.get(base + "/v1/config", headers={**sdk, "If-None-Match": etag}).status_code == 304
        results["banditflags GET /v1/config (304)"] = load(
            base + "/v1/config", args, {**sdk, "If-None-Match": etag}, None
        )
        results["banditflags POST /v1/events"] = load(base + "/v1/events", args, sdk, "/v1/events")
        for with_ids in (False, True) if args.ids else ():
            lua = (
                LUA_CONVERSIONS.replace("@K@", str(max(1, args.ids // 3)))
                .replace("@IDS@", "true" if with_ids else "false")
                .replace("@EXPOSURES@", '"exposures":' + json.dumps(ROWS["exposures"]))
                .replace("@PATH@", "/v1/events")
                .replace("@KEY@", SDK)
            )
            name = f"banditflags POST /v1/events {args.ids // 3 * 3} conv. {'with' if with_ids else 'no'} ids"
            results[name] = run_wrk(base + "/v1/events", args.seconds, args.connections, {}, lua)
        n = httpx.get(base + "/v1/flags/bench/stats", headers=admin).json()
        total = sum(p.get("n", 0) for p in n.get("variants", n.get("stats", [])) if isinstance(p, dict))
        print(f"(server counted {total} exposures after the events run)")
    finally:
        stop(server)
        log.close()
        if drop is not None:
            drop()

    for name, (rps, p99, bad) in results.items():
        print(f"{name:<52} {rps:9.0f} req/s   p99 {p99:8.2f} ms   errors {bad}")
    cfg, hello_get = results["banditflags GET /v1/config (304)"][0], results["hello GET /"][0]
    ev, hello_post = results["banditflags POST /v1/events"][0], results["hello POST /events"][0]
    print(f"ratio config polls / hello GET   : {cfg / hello_get:.2f}  (target >= 0.5)")
    print(f"ratio event batches / hello POST : {ev / hello_post:.2f}  (target >= 0.25)")
    print("config polls: " + ("PASS" if cfg >= 0.5 * hello_get else "UNDER TARGET"))
    print("event batches: " + ("PASS" if ev >= 0.25 * hello_post else "UNDER TARGET"))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
