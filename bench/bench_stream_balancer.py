"""What a load balancer adds to a kill switch: straight to a replica against through HAProxy, in one run.

Two replicas on a fresh PostgreSQL database behind HAProxy (tests/support/bf_topology.py), once with
HAProxy's ``option http-no-delay`` and once without. In each, ``--clients`` SDK clients stream from the
first replica directly and as many through the balancer; the benchmark flips a flag's kill switch
``--rounds`` times (the PATCH through the balancer) and times, per round, from the PATCH until every
client of the group answers the new variant. It prints the median and the worst round per group and
the balancer's median over the direct median: the part of the latency the balancer adds.

Without ``http-no-delay`` HAProxy sends a streamed body's chunks with ``MSG_MORE``, so the kernel holds
each small ``config`` event up to 200 ms waiting for more data: the kill switch pays it on every change.
PostgreSQL must run on 127.0.0.1:5432 with trust auth; haproxy must be installed (Debian: haproxy).

Run:  python bench/bench_stream_balancer.py [--rounds 10] [--clients 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from bf_topology import Topology  # noqa: E402

import banditflags  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROUND_TIMEOUT = 5.0


def _arrivals(
    groups: dict[str, list[banditflags.Client]], flag: str, want: str, t0: float
) -> dict[str, float]:
    """Seconds from ``t0`` until every client of each group answers ``want`` (both groups watched in
    one loop, so neither waits for the other); raises after ROUND_TIMEOUT."""
    out: dict[str, float] = {}
    while len(out) < len(groups):
        now = time.monotonic()
        if now - t0 > ROUND_TIMEOUT:
            raise RuntimeError(f"the kill switch did not reach every client in {ROUND_TIMEOUT} s")
        for name, clients in groups.items():
            if name not in out and all(c.variant(flag, "u") == want for c in clients):
                out[name] = now - t0
        time.sleep(0.0005)
    return out


def run(no_delay: bool, args: argparse.Namespace) -> dict[str, list[float]]:
    name = f"bf_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    db = f"postgresql://postgres@127.0.0.1:5432/{name}"
    clients: list[banditflags.Client] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bf-lb-") as tmp,
            Topology(db, Path(tmp), replicas=2, no_delay=no_delay) as topo,
            topo.admin() as admin,
        ):
            flag = "switch"
            body = {
                "key": flag,
                "variants": ["a", "b"],
                "control": "a",
                "policy": {"name": "fixed", "weights": [0, 1]},
            }
            assert admin.post("/v1/flags", json=body).status_code == 201
            direct = [
                banditflags.Client(topo.nodes[0].url, topo.sdk_key, refresh_interval=3600.0)
                for _ in range(args.clients)
            ]
            balanced = [
                banditflags.Client(topo.url, topo.sdk_key, refresh_interval=3600.0)
                for _ in range(args.clients)
            ]
            clients = direct + balanced
            for c in clients:  # starts each client's threads (a client starts on first use)
                c.wait_until_ready(10.0)
            deadline = time.monotonic() + 10.0
            while not all(c.stats().stream_connected for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the SDK streams did not connect in 10 s")
                time.sleep(0.02)
            groups = {"direct": direct, "balancer": balanced}
            out: dict[str, list[float]] = {name: [] for name in groups}
            for i in range(args.rounds):
                state, want = ("killed", "a") if i % 2 == 0 else ("running", "b")
                t0 = time.monotonic()
                assert admin.patch(f"/v1/flags/{flag}", json={"state": state}).status_code == 200
                for name, seconds in _arrivals(groups, flag, want, t0).items():
                    out[name].append(seconds)
                time.sleep(0.1)
            for c in clients:  # before the replicas stop, so that they do not log reconnects
                c.close(timeout=2.0)
            return out
    finally:
        for c in clients:
            c.close(timeout=2.0)
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--clients", type=int, default=3)
    args = ap.parse_args()
    n = args.clients
    print(f"2 replicas on PostgreSQL, {n} SDK clients straight to replica 0 and {n} through HAProxy, "
          f"{args.rounds} kill-switch flips each; {os.cpu_count()} cores")  # fmt: skip
    print(f"{'HAProxy':<22} {'group':<9} {'median ms':>10} {'worst ms':>9}")
    for no_delay in (False, True):
        label = "option http-no-delay" if no_delay else "defaults"
        res = run(no_delay, args)
        for group, lat in res.items():
            print(f"{label:<22} {group:<9} {statistics.median(lat) * 1e3:>10.1f} {max(lat) * 1e3:>9.1f}")
        ratio = statistics.median(res["balancer"]) / statistics.median(res["direct"])
        print(f"{label:<22} balancer median / direct median: {ratio:.1f}x")


if __name__ == "__main__":
    main()
