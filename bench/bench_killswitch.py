"""Kill-switch propagation: from the PATCH to every one of N connected SDK clients answering control.

Starts the real server as a subprocess on a loopback port (its own process, so the clients' threads do
not share its GIL), a flag whose every unit gets the non-control arm (fixed weights [0, 1]), and N
``banditflags.Client`` instances in this process with the push stream on (polling every hour, so only
the stream can deliver in time). Each round sends ``PATCH {"state": "killed"}`` from a helper thread
while the main thread polls every client's ``variant()`` until all answer the control arm, then
un-kills and waits for all to be back. Prints, over the rounds:

- "all N": the time until the last client obeyed (the promise: p99 <= 500 ms on loopback);
- "each client": every client's own delay;
- the PATCH round trip itself (the floor: no client can obey before the change is committed), and
  the ratio of the "all N" p50 to that floor and of the p99 to the 500 ms target.

With ``--second-server`` the PATCHes go to a second server process sharing the database, so the change
reaches the clients' server through its revision watcher (one read every 0.1 s) instead of its own write.
With ``--peer-polling`` it measures the same with the stream off and the SDK's default 5 s polling, the
behaviour before the stream existed (Unleash polls every 15 s by default).

    python bench/bench_killswitch.py                # 50 clients, 40 rounds, SQLite
    python bench/bench_killswitch.py --db postgresql://postgres@127.0.0.1:5432/bench_kill
    python bench/bench_killswitch.py --second-server
    python bench/bench_killswitch.py --clients 50 --rounds 10 --peer-polling

Loopback only, bounded in rounds and time; stops by itself.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import banditflags

FLAG = "kill-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def start_server(db: str, admin: str, sdk: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env.update(BANDITFLAGS_ADMIN_KEY=admin, BANDITFLAGS_SDK_KEY=sdk)
    cmd = [sys.executable, "-m", "banditflags_server", "serve", "--db", db, "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning", "--recompute-interval", "3600"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def wait_all(clients: list[banditflags.Client], want: str, deadline_s: float) -> list[float | None]:
    """Seconds (from now) at which each client first answered ``want``; None if it did not in time."""
    start = time.perf_counter()
    seen: list[float | None] = [None] * len(clients)
    left = set(range(len(clients)))
    while left and time.perf_counter() - start < deadline_s:
        for i in list(left):
            if clients[i].variant(FLAG, "unit-1") == want:
                seen[i] = time.perf_counter() - start
                left.discard(i)
        time.sleep(0.0005)  # let the clients' threads run
    return seen


def measure(
    url: str, admin: httpx.Client, sdk_key: str, n: int, rounds: int, streaming: bool
) -> dict[str, list[float]]:
    clients = [
        banditflags.Client(url, sdk_key, refresh_interval=3600.0 if streaming else 5.0, streaming=streaming)
        for _ in range(n)
    ]
    try:
        for c in clients:
            if not c.wait_until_ready(10):
                raise SystemExit("a client did not get the config")
        if streaming:
            deadline = time.monotonic() + 20
            while not all(c.stats().stream_connected for c in clients):
                if time.monotonic() > deadline:
                    raise SystemExit("not every client connected its stream")
                time.sleep(0.05)
        assert all(c.variant(FLAG, "unit-1") == "b" for c in clients)
        every: list[float] = []
        last: list[float] = []
        patch: list[float] = []
        for _ in range(rounds):
            rtt: list[float] = []

            def kill(rtt: list[float] = rtt) -> None:
                t = time.perf_counter()
                admin.patch(f"/v1/flags/{FLAG}", json={"state": "killed"}).raise_for_status()
                rtt.append(time.perf_counter() - t)

            sender = threading.Thread(target=kill)
            sender.start()
            seen = wait_all(clients, "a", 30.0)
            sender.join()
            if any(s is None for s in seen):
                raise SystemExit("a client did not obey the kill within 30 s")
            got = [s for s in seen if s is not None]
            every += got
            last.append(max(got))
            patch += rtt
            admin.patch(f"/v1/flags/{FLAG}", json={"state": "running"}).raise_for_status()
            if any(s is None for s in wait_all(clients, "b", 30.0)):
                raise SystemExit("a client did not see the un-kill within 30 s")
            # A random pause: a fixed one would lock the rounds in phase with the watcher's polls.
            time.sleep(random.uniform(0.05, 0.3))
        return {"every": every, "last": last, "patch": patch}
    finally:
        for c in clients:
            c.close(timeout=1.0)


def report(title: str, r: dict[str, list[float]], n: int) -> None:
    ms = 1000.0
    print(f"\n{title}")
    last, every = r["last"], r["every"]
    print(
        f"  all {n} clients obeyed:   p50 {percentile(last, 50) * ms:7.1f} ms   p99 "
        f"{percentile(last, 99) * ms:7.1f} ms   max {max(last) * ms:7.1f} ms   ({len(last)} rounds)"
    )
    print(
        f"  each client:            p50 {percentile(every, 50) * ms:7.1f} ms   p99 "
        f"{percentile(every, 99) * ms:7.1f} ms   ({len(every)} samples)"
    )
    floor = statistics.median(r["patch"])
    print(f"  floor, PATCH round trip: p50 {floor * ms:7.1f} ms")
    print(f"  all-clients p50 / PATCH p50 = {percentile(r['last'], 50) / floor:.2f}x;  "
          f"p99 / 500 ms target = {percentile(r['last'], 99) / 0.5:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--db", help="database (default: a fresh SQLite file)")
    parser.add_argument("--peer-polling", action="store_true", help="also measure 5 s polling, stream off")
    parser.add_argument("--second-server", action="store_true", help="PATCH through another server process")
    args = parser.parse_args()
    if not 1 <= args.clients <= 500 or not 1 <= args.rounds <= 1000:
        raise SystemExit("--clients 1..500, --rounds 1..1000")
    admin_key, sdk_key = "bf_admin_" + secrets.token_urlsafe(16), "bf_sdk_" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or str(Path(tmp) / "bench.db")
        proc, url = start_server(db, admin_key, sdk_key)
        procs = [proc]
        try:
            admin_url = url
            if args.second_server:
                second, admin_url = start_server(db, admin_key, sdk_key)
                procs.append(second)
                print(f"changes go through a second server, {admin_url}")
            headers = {"Authorization": f"Bearer {admin_key}"}
            with httpx.Client(base_url=admin_url, headers=headers, timeout=30) as admin:
                admin.delete(f"/v1/flags/{FLAG}")
                body = {
                    "key": FLAG,
                    "variants": ["a", "b"],
                    "control": "a",
                    "policy": {"name": "fixed", "weights": [0, 1]},
                }
                admin.post("/v1/flags", json=body).raise_for_status()
                print(f"server {url}, database {db.split('://')[0] if '://' in db else 'sqlite'}, "
                      f"{args.clients} clients in one process, {os.cpu_count()} CPUs")  # fmt: skip
                r = measure(url, admin, sdk_key, args.clients, args.rounds, streaming=True)
                report("push stream (default)", r, args.clients)
                if args.peer_polling:
                    p = measure(url, admin, sdk_key, args.clients, max(3, args.rounds // 8), streaming=False)
                    report("peer: polling every 5 s, stream off", p, args.clients)
                    ratio = percentile(p["last"], 50) / percentile(r["last"], 50)
                    print(f"\n  polling p50 / stream p50 = {ratio:.0f}x")
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)


if __name__ == "__main__":
    main()
