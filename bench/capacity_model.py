"""The capacity model of docs/scaling.md as code: from measured unit costs to replicas, database write
rate, connections and memory for a number of SDK processes.

The defaults are this machine's PostgreSQL figures in docs/scaling.md; the unit costs are what
``bench/bench_capacity.py`` prints (CPU per event batch and per config poll, memory per open stream,
CPU per stream to push a change, batches per commit): pass your own measurements to get your own table.
Nothing here is measured: it is arithmetic over the inputs, so a
reader can check every cell.

    python bench/capacity_model.py                      # the table in docs/scaling.md
    python bench/capacity_model.py --batch-cpu-us 250 --flush-interval 10
    python bench/capacity_model.py --check-cores 2      # prediction for one 2-core host (bench_topology)

Model (per SDK process, steady state, streaming on, which is the SDK's default):

- one event batch per ``flush_interval`` (an idle SDK sends nothing), ``rows`` rows each;
- one open ``/v1/stream`` (memory on the replica that holds it; a keep-alive every 15 s; no polls);
- on every config change, each replica writes the new config to each of its streams.

A replica is sized to ``target_utilisation`` of its cores. The database sees one transaction per group
of batches (group commit): its commit rate is bounded by the replicas' writer threads, and its row
writes are one idempotency row per batch plus the coalesced stats rows plus one row per conversion id.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class UnitCosts:
    batch_cpu_us: float  # server CPU per POST /v1/events (all threads), measured
    config_cpu_us: float  # server CPU per GET /v1/config answered 304, measured
    stream_kib: float  # server RSS per idle open stream, measured
    push_cpu_us: float  # server CPU per stream to push one config change, measured
    commit_ms: float  # one group commit's latency (the writer thread's cycle), measured


@dataclass(frozen=True)
class Workload:
    sdks: int
    flush_interval: float = 2.0
    rows: int = 6  # (flag, rule, version, arm) rows per batch: exposures + rewards
    conversion_ids_per_batch: float = 3.0  # binary conversions carrying a decision id
    distinct_keys: int = 2_000  # distinct (flag, rule, version, arm) keys live in the fleet
    refresh_interval: float = 0.0  # > 0: SDKs poll the config (streaming=False) instead of streams


@dataclass(frozen=True)
class Replica:
    # One `banditflags serve` process: its event loop and group-commit writer share one GIL, so it uses
    # about one core however many the host has (measured, docs/scaling.md); run one replica per core.
    cores: int = 1
    target_utilisation: float = 0.6
    connections: int = 21  # pool 10 + overflow 10, plus the LISTEN connection
    kill_switch_budget_ms: float = 500.0


def plan(w: Workload, c: UnitCosts, r: Replica) -> dict[str, float]:
    """What ``w.sdks`` SDK processes need, by the two constraints that bind: CPU for event batches and
    the kill switch's fan-out time per replica (one event loop writes every stream of the replica)."""
    batches_per_s = w.sdks / w.flush_interval
    polls_per_s = w.sdks / w.refresh_interval if w.refresh_interval > 0 else 0.0
    ingest_cores = (batches_per_s * c.batch_cpu_us + polls_per_s * c.config_cpu_us) / 1e6
    by_cpu = math.ceil(ingest_cores / (r.cores * r.target_utilisation))
    # A change reaches a replica's last stream after streams × push CPU (one loop, one core).
    streams_within_budget = int(r.kill_switch_budget_ms * 1000 / c.push_cpu_us)
    by_streams = math.ceil(w.sdks / streams_within_budget) if polls_per_s == 0 else 0
    replicas = max(2, by_cpu, by_streams)  # two for availability
    per_replica_batches = batches_per_s / replicas
    # One writer per replica commits back to back; a group holds what arrived during the last commit.
    group = max(1.0, per_replica_batches * c.commit_ms / 1000)
    commits_per_s = per_replica_batches / group * replicas
    stats_rows_per_commit = min(group * w.rows, float(w.distinct_keys))
    row_writes = batches_per_s * (1 + w.conversion_ids_per_batch) + commits_per_s * stats_rows_per_commit
    streams_per_replica = w.sdks / replicas if polls_per_s == 0 else 0.0
    return {
        "sdks": w.sdks,
        "batches_per_s": batches_per_s,
        "ingest_cores": ingest_cores,
        "replicas_by_cpu": by_cpu,
        "replicas_by_streams": by_streams,
        "replicas": replicas,
        "commits_per_s": commits_per_s,
        "row_writes_per_s": row_writes,
        "connections": replicas * r.connections,
        "stream_mib_per_replica": streams_per_replica * c.stream_kib / 1024,
        "push_ms": streams_per_replica * c.push_cpu_us / 1000,
    }


def _fmt(x: float) -> str:
    if x >= 10_000:
        return f"{x / 1000:,.0f}k"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x != int(x) else f"{int(x)}"


def table(rows: list[dict[str, float]]) -> str:
    head = (
        "| SDK processes | batches/s | ingest cores | replicas (CPU / streams / chosen) | DB commits/s "
        "| DB row writes/s | DB connections | stream memory per replica | kill-switch push per replica |"
    )
    lines = [head, "|" + "---|" * 9]
    for p in rows:
        lines.append(
            f"| {_fmt(p['sdks'])} | {_fmt(p['batches_per_s'])} | {p['ingest_cores']:.1f} "
            f"| {int(p['replicas_by_cpu'])} / {int(p['replicas_by_streams'])} / **{int(p['replicas'])}** "
            f"| {_fmt(p['commits_per_s'])} | {_fmt(p['row_writes_per_s'])} | {int(p['connections'])} "
            f"| {p['stream_mib_per_replica']:,.0f} MiB | {p['push_ms']:,.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-cpu-us", type=float, default=360.0)
    ap.add_argument("--config-cpu-us", type=float, default=76.0)
    ap.add_argument("--stream-kib", type=float, default=28.0)
    ap.add_argument("--push-cpu-us", type=float, default=36.0)
    ap.add_argument("--commit-ms", type=float, default=7.0)
    ap.add_argument("--flush-interval", type=float, default=2.0)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument(
        "--refresh-interval",
        type=float,
        default=0.0,
        help="SDKs poll the config every this many seconds instead of holding a stream (0: streams)",
    )
    ap.add_argument(
        "--cores", type=int, default=1, help="cores a replica process uses (1: the GIL; one process a core)"
    )
    ap.add_argument("--sdks", default="1000,10000,100000,1000000")
    ap.add_argument(
        "--check-cores",
        type=int,
        default=0,
        help="also predict event batches/s for one host of this many cores (bench_topology's setup)",
    )
    args = ap.parse_args()
    costs = UnitCosts(
        args.batch_cpu_us, args.config_cpu_us, args.stream_kib, args.push_cpu_us, args.commit_ms
    )
    replica = Replica(cores=args.cores)
    rows = [
        plan(
            Workload(int(n), args.flush_interval, args.rows, refresh_interval=args.refresh_interval),
            costs,
            replica,
        )
        for n in args.sdks.split(",")
    ]
    print(
        f"unit costs: batch {costs.batch_cpu_us:.0f} µs CPU, config poll {costs.config_cpu_us:.0f} µs, "
        f"stream {costs.stream_kib:.0f} KiB, push {costs.push_cpu_us:.0f} µs/stream, "
        f"commit {costs.commit_ms:.0f} ms; flush every {args.flush_interval:g} s, {args.rows} rows a batch; "
        + (f"config polled every {args.refresh_interval:g} s; " if args.refresh_interval else "streams; ")
        + f"replicas of {args.cores} core{'s' if args.cores > 1 else ''} at 60%\n"
    )
    print(table(rows))
    if args.check_cores:
        # One replica process is bounded by one core (the GIL); the host by all its cores, which wrk,
        # HAProxy and PostgreSQL share with the replicas.
        ceiling = args.check_cores * 1e6 / costs.batch_cpu_us
        one = 1e6 / costs.batch_cpu_us
        print(
            f"\none {args.check_cores}-core host: one replica at most {one:,.0f} batches/s "
            f"(one core of Python); the host at most {ceiling:,.0f} if the servers had every core; "
            f"replicas add throughput up to {args.check_cores} (one a core), less what wrk, HAProxy "
            "and PostgreSQL take; more only contend"
        )


if __name__ == "__main__":
    main()
