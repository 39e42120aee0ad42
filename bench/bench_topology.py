"""Replicas behind HAProxy on one PostgreSQL database: throughput and p99 per replica count, in one run.

For each replica count (default 1, 2, 3) this starts that many ``banditflags serve`` processes on a
fresh PostgreSQL database behind HAProxy (tests/support/bf_topology.py: round robin, health checks),
then drives the balancer with wrk (Debian's package, 32 connections):

- ``POST /v1/events``: 3 exposure + 3 reward rows, a fresh ``batch_id`` each, every batch committed
  before its 202 (what an SDK's flush costs the servers);
- ``GET /v1/config`` with the current ETag (every answer a 304, what a polling SDK costs);

and prints requests/s and p99 for each, the exposures the database counted against what wrk got 202s
for (they must be equal: nothing lost, nothing doubled), and the scaling against one replica.

All processes share this machine's cores with wrk and HAProxy: on the 2-core dev machine more replicas
add CPU contention, not CPU, so the table shows what the topology costs and where it saturates rather
than a speed-up (docs/scaling.md reads it). PostgreSQL must run on 127.0.0.1:5432 with trust auth.

Run:  python bench/bench_topology.py [--replicas 1,2,3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from bench_server import ROWS, load  # noqa: E402
from bf_topology import Topology, server_totals  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PER_REQUEST = sum(r["count"] for r in ROWS["exposures"])


def fresh_database() -> tuple[str, sa.Engine, str]:
    name = f"bf_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:5432/{name}", engine, name


def run(replicas: int, args: argparse.Namespace) -> dict[str, float]:
    url, engine, name = fresh_database()
    try:
        with tempfile.TemporaryDirectory(prefix="bf-topo-") as tmp:
            env = {"BANDITFLAGS_RECOMPUTE_INTERVAL": "3600", "BANDITFLAGS_LOG_LEVEL": "warning"}
            topology = Topology(url, Path(tmp), replicas=replicas, env=env, no_delay=not args.haproxy_delay)
            with topology as topo, topo.admin() as admin:
                r = admin.post("/v1/flags", json={"key": "bench", "variants": ["a", "b", "c"]})
                assert r.status_code == 201, r.text
                sdk = {"Authorization": f"Bearer {topo.sdk_key}"}
                etag = admin.get("/v1/config", headers=sdk).headers["etag"]
                cfg = load(topo.url + "/v1/config", args, {**sdk, "If-None-Match": etag}, None)
                ev = load(topo.url + "/v1/events", args, sdk, "/v1/events")
                exposures, _ = server_totals(admin, "bench")
                return {
                    "config_rps": cfg[0], "config_p99": cfg[1], "config_errors": cfg[2],
                    "events_rps": ev[0], "events_p99": ev[1], "events_errors": ev[2],
                    "exposures": exposures,
                }  # fmt: skip
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--haproxy-delay", action="store_true", help="leave HAProxy's option http-no-delay off (its default)"
    )
    args = ap.parse_args()
    args.generator = "wrk"
    counts = [int(x) for x in args.replicas.split(",")]
    print(f"HAProxy round robin{'' if args.haproxy_delay else ' with option http-no-delay'}, wrk "
          f"{args.connections} connections, {args.seconds} s per run, {os.cpu_count()} cores; "
          "PostgreSQL on loopback")  # fmt: skip
    rows = {n: run(n, args) for n in counts}
    base = rows[counts[0]]
    head = f"{'replicas':>8} {'events/s':>9} {'p99 ms':>8} {'config/s':>9} {'p99 ms':>8} {'errors':>7}"
    print(f"\n{head}  exposures")
    for n, r in rows.items():
        errors = int(r["events_errors"] + r["config_errors"])
        print(f"{n:>8} {r['events_rps']:>9.0f} {r['events_p99']:>8.1f} {r['config_rps']:>9.0f} "
              f"{r['config_p99']:>8.1f} {errors:>7}  {int(r['exposures'])} counted "
              f"({r['exposures'] / PER_REQUEST:.0f} batches)")  # fmt: skip
    for n, r in rows.items():
        print(f"{n} replicas vs {counts[0]}: events {r['events_rps'] / base['events_rps']:.2f}x, "
              f"config {r['config_rps'] / base['config_rps']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
