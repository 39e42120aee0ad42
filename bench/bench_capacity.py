"""What one SDK process costs a server: the measured unit costs behind docs/scaling.md's capacity model.

One ``banditflags serve`` process (SQLite by default, ``--db`` for a PostgreSQL server) is measured
for what an SDK process does to it:

- a config poll (``GET /v1/config`` answered 304): requests/s and the server's CPU per request;
- an event batch (``POST /v1/events``, 3 exposure + 3 reward rows, group commit): batches/s, p99, CPU
  per batch, and batches per commit, at ``--connections`` (one run per value);
- an open push stream (``GET /v1/stream``): the server's resident memory per open stream (``--streams``
  idle streams, opened with raw sockets so the client side costs nothing), and the CPU time to push one
  config change to all of them.

CPU is the server process's user + system time over the run (``/proc/<pid>/stat``), so it counts every
thread (the event loop, the group-commit writer, the thread pool), divided by the requests answered.
Each wrk run takes ``--seconds``; wrk (Debian's package) runs on the same machine and takes a core of its
own, so the rates are this machine's, not a server's limit on dedicated cores. The CPU per request is the
portable number; docs/scaling.md builds on it.

Run:  python bench/bench_capacity.py [--db postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import free_port, fresh_postgres, load, stop, wait_up

ADMIN, SDK = "bf_admin_" + secrets.token_urlsafe(24), "bf_sdk_" + secrets.token_urlsafe(24)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))  # type: ignore[union-attr]


def metric(base: str, name: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def measured(pid: int, run: callable) -> tuple[tuple[float, float, int], float]:  # type: ignore[valid-type]
    c0 = cpu_seconds(pid)
    out = run()
    return out, cpu_seconds(pid) - c0


def open_streams(port: int, n: int) -> list[socket.socket]:
    request = (
        f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SDK}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        socks.append(s)
    for s in socks:  # each stream answers at once with the config: read until that event arrived
        s.settimeout(10)
        buf = b""
        while b"event: config" not in buf:
            buf += s.recv(65536)
    return socks


def drain(socks: list[socket.socket], marker: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for s in socks:
        buf = b""
        while marker not in buf and time.monotonic() < deadline:
            try:
                buf += s.recv(65536)
            except TimeoutError:
                break


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--db", default="", help="a PostgreSQL server URL (a fresh database is made, then dropped)"
    )
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", default="32,128")
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--only-streams", action="store_true", help="measure only the open streams")
    ap.add_argument("--pushes", type=int, default=1, help="config changes pushed to the streams (averaged)")
    args = ap.parse_args()
    args.generator = "wrk"
    tmp = tempfile.mkdtemp(prefix="bf-capacity-")
    db_url, drop = fresh_postgres(args.db) if args.db else ("", None)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env.update(BANDITFLAGS_ADMIN_KEY=ADMIN, BANDITFLAGS_SDK_KEY=SDK, BANDITFLAGS_LOG_LEVEL="warning")
    env.update(BANDITFLAGS_MAX_STREAMS=str(args.streams + 100))
    log = open(os.path.join(tmp, "server.log"), "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "banditflags_server", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", db_url or os.path.join(tmp, "capacity.db"), "--recompute-interval", "3600"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    engine = "PostgreSQL" if args.db else "SQLite"
    print(f"one server process, {engine}; wrk on the same {os.cpu_count()} cores, {args.seconds} s runs")
    try:
        wait_up(base + "/healthz", server)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for i in range(10):  # a config of ten 3-variant flags; the batches count onto the first one's
            body = {"key": "bench" if i == 0 else f"cap-{i}", "variants": ["a", "b", "c"]}
            assert httpx.post(base + "/v1/flags", headers=admin, json=body).status_code == 201
        sdk = {"Authorization": f"Bearer {SDK}"}
        r = httpx.get(base + "/v1/config", headers=sdk)
        etag, config_bytes = r.headers["etag"], len(r.content)
        args.connections_list = [int(c) for c in args.connections.split(",")]

        args.connections = args.connections_list[0]
        if args.only_streams:
            args.connections_list = []
        if not args.only_streams:
            (rps, p99, bad), cpu = measured(
                server.pid, lambda: load(base + "/v1/config", args, {**sdk, "If-None-Match": etag}, None)
            )
            n = rps * args.seconds
            each = cpu / n * 1e6
            print(f"\nconfig poll (304)      {rps:8.0f} req/s  p99 {p99:7.2f} ms  {each:6.0f} µs CPU each"
                  f"  (errors {bad}; a full config of 10 flags is {config_bytes} bytes)")  # fmt: skip
        for conns in args.connections_list:
            args.connections = conns
            g0 = metric(base, "banditflags_ingest_group_batches_count")
            b0 = metric(base, "banditflags_ingest_group_batches_sum")
            (rps, p99, bad), cpu = measured(
                server.pid, lambda: load(base + "/v1/events", args, sdk, "/v1/events")
            )
            groups = metric(base, "banditflags_ingest_group_batches_count") - g0
            batches = metric(base, "banditflags_ingest_group_batches_sum") - b0
            each, per_commit = cpu / max(batches, 1) * 1e6, batches / max(groups, 1)
            print(f"event batch, {conns:>3} conns {rps:8.0f} req/s  p99 {p99:7.2f} ms  {each:6.0f} µs CPU"
                  f"  ({per_commit:.1f} batches per commit, {groups / args.seconds:.0f} commits/s, "
                  f"errors {bad})")  # fmt: skip
        if args.connections_list:  # every batch's 3 exposure rows count 10 + 11 + 12 onto the flag "bench"
            stats = httpx.get(base + "/v1/flags/bench/stats", headers=admin).json()
            counted = sum(v.get("n", 0) for v in stats.get("variants", []) if isinstance(v, dict))
            print(f"(exposures counted on the flag: {counted}; 33 per committed batch: {counted % 33 == 0})")

        rss0 = rss_kib(server.pid)
        socks = open_streams(port, args.streams)
        time.sleep(1.0)
        rss1 = rss_kib(server.pid)
        push = cpu = 0.0
        for i in range(args.pushes):  # alternate kill / run: each change is a new config on every stream
            state = "killed" if i % 2 == 0 else "running"
            c0 = cpu_seconds(server.pid)
            t0 = time.monotonic()
            r = httpx.patch(base + "/v1/flags/bench", headers=admin, json={"state": state})
            assert r.status_code == 200
            drain(socks, f'"{state}"'.encode())
            push += (time.monotonic() - t0) / args.pushes
            cpu += (cpu_seconds(server.pid) - c0) / args.pushes
        print(f"open streams           {args.streams} idle: {(rss1 - rss0) / args.streams:.1f} KiB RSS each; "
              f"one change pushed to all in {push * 1000:.0f} ms, {cpu / args.streams * 1e6:.0f} µs CPU per "
              f"stream")  # fmt: skip
        for s in socks:
            s.close()
    finally:
        stop(server)
        log.close()
        if drop is not None:
            drop()


if __name__ == "__main__":
    main()
