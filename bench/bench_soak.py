"""Soak: SDK traffic through a real server for minutes, memory of both over time, exact counts at the end.

One ``banditflags serve`` process (SQLite in a temporary directory, or ``--db`` PostgreSQL: a fresh
database is made there and dropped) and ``--workers`` SDK processes, each a real ``banditflags.Client``
over HTTP deciding at a steady ``--rate`` (decisions a second per worker, bounded so that two cores are
not saturated: the point is memory over time, not throughput):

- two flags: ``soak-plain`` (three variants, Thompson sampling, recomputed every 5 s) and
  ``soak-rules`` (individual targets, a ``staff`` rule serving a fixed variant, and a segment rule with
  its own bandit), decided with attributes;
- half the units new every time (distinct ids: unit memory, conversion memory and the server's
  de-duplication window fill up to their caps; the SDK's conversion memory is capped at 20,000 here so
  that it fills within the warm-up), half from a pool of 5,000 returning units;
- conversions tracked by Decision, by token and by flag + unit, ~10% of decisions, some tracked twice
  (the repeat must come back False);
- every 45 s the operator side changes something: a kill and un-kill of ``soak-plain``, an edit of a
  rule's clause, a throttle, so configs, tables and streams churn.

Every ``--sample`` seconds it prints the resident memory (VmRSS) of the server and of each SDK process,
the decisions made so far and the batches sent; at the end, after each worker's ``close()``, it
compares what the SDKs counted (exposures: bucketed decisions; rewards: ``track()`` calls answered True)
with what the server stored, flag by flag, and prints lost and doubled. Memory growth is measured from
the end of the warm-up (``--warmup`` seconds: the caps fill then) to the end, as a slope. Exit status 1
when a count differs or memory grows more than ``--max-growth`` MiB after warm-up.

Run: .venv/bin/python bench/bench_soak.py [--minutes 10] [--rate 1500] [--workers 2] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ADMIN = "bf_admin_soak_0123456789abcdef"
SDK = "bf_sdk_soak_0123456789abcdef01"
FLAGS = ("soak-plain", "soak-rules")
VARIANTS = [{"key": k, "value": k} for k in ("blue", "green", "orange")]
BINARY = {"reward": "binary", "direction": "maximize", "unit": "decision"}
COUNTRIES = ("DE", "AT", "CH", "FR", "US", "GB", "BR", "JP")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the SDK worker (a separate process) -----------------------------------------------------------


def worker(url: str, seconds: float, rate: float, seed: int, status: Path) -> None:
    """Decide and track at ``rate`` a second for ``seconds``; write tallies to ``status`` as it goes."""
    import banditflags

    rng = random.Random(seed)
    # The conversion memory's cap lowered from 100,000 so that it fills within the warm-up (at ~150
    # conversions a second the default takes 11 minutes): what the soak checks is that memory stops
    # at the caps, whatever they are. The unit memory (100,000 a flag) fills in ~2 minutes here.
    client = banditflags.Client(
        url, SDK, refresh_interval=5.0, flush_interval=2.0, decision_memory_size=20_000
    )
    client.wait_until_ready(10.0)
    exposures = dict.fromkeys(FLAGS, 0)
    rewards = dict.fromkeys(FLAGS, 0)
    repeats_refused = repeats = decisions = 0
    pool = [f"w{seed}-r{i}" for i in range(5000)]
    start = time.monotonic()
    last_write = 0.0
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) * rate)
        while n < due:
            n += 1
            unit = f"w{seed}-u{n}" if n % 2 else rng.choice(pool)
            flag = FLAGS[n % 2]
            attrs = {
                "country": rng.choice(COUNTRIES),
                "email": f"{unit}@{rng.choice(('corp.test', 'x.org'))}",
            }
            d = client.decide(flag, unit, None, attributes=attrs if flag == "soak-rules" else None)
            decisions += 1
            if d.token is None:  # killed (control, no exposure) or an error
                continue
            exposures[flag] += 1
            if rng.random() < 0.10:
                how = rng.randrange(3)
                target: Any = d if how == 0 else d.token if how == 1 else flag
                ok = client.track(target, unit if how == 2 else None)
                if ok:
                    rewards[flag] += 1
                if rng.random() < 0.2:  # a retried webhook: must not count again
                    repeats += 1
                    if not client.track(d):
                        repeats_refused += 1
        if now - last_write >= 2.0:
            last_write = now
            st = client.stats()
            status.write_text(json.dumps({"decisions": decisions, "batches": st.batches_sent}))
        time.sleep(0.005)
    delivered = client.close(30.0)
    st = client.stats()
    status.write_text(
        json.dumps(
            {
                "decisions": decisions,
                "exposures": exposures,
                "rewards": rewards,
                "repeats": repeats,
                "repeats_refused": repeats_refused,
                "delivered": delivered,
                "batches": st.batches_sent,
                "batches_failed": st.batches_failed,
                "batches_dropped": st.batches_dropped,
                "decisions_dropped": st.decisions_dropped,
                "duplicates": st.duplicates,
                "done": True,
            }
        )
    )


# -- the conductor ----------------------------------------------------------------------------------


def create_flags(admin: httpx.Client) -> None:
    plain = {
        "key": "soak-plain",
        "variants": VARIANTS,
        "control": "blue",
        "objective": BINARY,
        "policy": {"name": "thompson", "floor": 0.05, "burn_in": 100},
        "recompute_interval": 5,
    }
    rules = {
        **plain,
        "key": "soak-rules",
        "targets": [{"variant": "orange", "units": ["w0-r1", "w1-r2"]}],
        "rules": [
            {
                "id": "staff",
                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}],
                "serve": {"variant": "green"},
            },
            {
                "id": "dach",
                "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "AT", "CH"]}],
                "serve": {"bandit": True},
            },
        ],
    }
    for body in (plain, rules):
        r = admin.post("/v1/flags", json=body)
        if r.status_code != 201:
            raise SystemExit(f"creating {body['key']}: {r.status_code} {r.text}")


def operator_step(admin: httpx.Client, step: int) -> str:
    """One change on the operator's side, in turn: kill/unkill, a rule edit, a throttle."""
    kind = step % 3
    if kind == 0:
        admin.patch("/v1/flags/soak-plain", json={"state": "killed"}).raise_for_status()
        time.sleep(1.0)
        admin.patch("/v1/flags/soak-plain", json={"state": "running"}).raise_for_status()
        return "kill + unkill soak-plain"
    if kind == 1:
        flag = admin.get("/v1/flags/soak-rules").json()
        rules = flag["rules"]
        domain = "@corp.test" if step % 2 else "@staff.test"
        rules[0]["clauses"][0]["values"] = [domain, "@corp.test"]
        admin.patch("/v1/flags/soak-rules", json={"rules": rules}).raise_for_status()
        return "edit rule staff"
    throttle = 0.5 if step % 2 else 1.0
    admin.patch("/v1/flags/soak-plain", json={"exploration": throttle}).raise_for_status()
    return f"throttle soak-plain {throttle:.0%}"


def server_counts(admin: httpx.Client, key: str) -> tuple[int, int]:
    """(exposures, rewards) the server stored for ``key``: the default allocation's and every rule's."""
    body = admin.get(f"/v1/flags/{key}/stats").json()
    n = sum(sum(p["n"]) for p in body["periods"])
    r = sum(sum(p["rewards"]) for p in body["periods"])
    for rule in body.get("rules", []):
        n += sum(v["n"] for v in rule["stats"])
        r += sum(v["rewards"] for v in rule["stats"])
    return n, r


def fresh_postgres(cluster_url: str) -> tuple[str, Any]:
    sys.path.insert(0, str(HERE))
    from bench_server import fresh_postgres as make

    return make(cluster_url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1500.0, help="decisions a second, per SDK process")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between memory samples")
    ap.add_argument(
        "--warmup", type=float, default=300.0, help="seconds before growth is measured (the caps fill)"
    )
    ap.add_argument("--max-growth", type=float, default=16.0, help="MiB of RSS growth allowed after warm-up")
    ap.add_argument("--db", default="", help="a PostgreSQL URL (a fresh database is made and dropped)")
    ap.add_argument(
        "--worker", nargs=5, metavar=("URL", "SECONDS", "RATE", "SEED", "STATUS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.worker:
        url, seconds, rate, seed, status = args.worker
        worker(url, float(seconds), float(rate), int(seed), Path(status))
        return 0

    seconds = args.minutes * 60.0
    tmp = Path(tempfile.mkdtemp(prefix="bf-soak-"))
    db_url, drop = fresh_postgres(args.db) if args.db else (str(tmp / "soak.db"), None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env.update(BANDITFLAGS_ADMIN_KEY=ADMIN, BANDITFLAGS_SDK_KEY=SDK)
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "banditflags_server", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", db_url, "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    procs.append(server)
    failed = False
    try:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30.0)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                if admin.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start; see " + str(tmp / "server.log"))
            time.sleep(0.2)
        create_flags(admin)
        statuses = [tmp / f"worker{i}.json" for i in range(args.workers)]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", url, str(seconds), str(args.rate), str(i), str(s)],
                stdout=open(tmp / f"worker{i}.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            for i, s in enumerate(statuses)
        ]
        procs += workers
        print(f"soak: {args.minutes:g} min, {args.workers} SDK processes x {args.rate:g} decisions/s, "
              f"{'PostgreSQL' if args.db else 'SQLite'}; machine: {os.cpu_count()} cores, "
              f"Python {sys.version.split()[0]}")  # fmt: skip
        header = f"{'t (s)':>6} {'server RSS':>11} " + " ".join(
            f"{'SDK' + str(i) + ' RSS':>10}" for i in range(args.workers)
        )
        print(header + f" {'decisions':>11} {'batches':>8}  operator")
        samples: list[tuple[float, int, list[int]]] = []
        start = time.monotonic()
        next_sample = 0.0
        next_change = 45.0
        step = 0
        change = ""
        while any(w.poll() is None for w in workers):
            t = time.monotonic() - start
            if t >= next_change and t < seconds - 10:
                try:
                    change = operator_step(admin, step)
                except httpx.HTTPError as exc:
                    change = f"operator change failed: {exc}"
                step += 1
                next_change += 45.0
            if t >= next_sample:
                next_sample += args.sample
                srv = rss_kib(server.pid)
                sdks = [rss_kib(w.pid) for w in workers]
                done = [json.loads(s.read_text()) if s.exists() else {} for s in statuses]
                decisions = sum(d.get("decisions", 0) for d in done)
                batches = sum(d.get("batches", 0) for d in done)
                if all(sdks):
                    samples.append((t, srv, sdks))
                print(f"{t:6.0f} {srv / 1024:9.1f} M " + " ".join(f"{x / 1024:8.1f} M" for x in sdks)
                      + f" {decisions:11,} {batches:8,}  {change}", flush=True)  # fmt: skip
                change = ""
            time.sleep(0.5)
        finals = [json.loads(s.read_text()) for s in statuses]
        if not all(f.get("done") for f in finals):
            raise SystemExit("a worker did not finish; see " + str(tmp))

        print("\nmemory after warm-up (from the first sample at or after "
              f"{args.warmup:g} s to the last):")  # fmt: skip
        later = [s for s in samples if s[0] >= args.warmup] or samples[-2:]
        first, last = later[0], later[-1]
        span_min = max((last[0] - first[0]) / 60.0, 1e-9)
        rows = [("server", first[1], last[1])] + [
            (f"SDK {i}", first[2][i], last[2][i]) for i in range(args.workers)
        ]
        for name, a, b in rows:
            growth = (b - a) / 1024
            print(f"  {name:7} {a / 1024:7.1f} -> {b / 1024:7.1f} MiB  growth {growth:+6.1f} MiB "
                  f"({(b - a) / span_min:+8.1f} KiB/min)")  # fmt: skip
            if growth > args.max_growth:
                failed = True
                print(f"  ^ grew more than {args.max_growth:g} MiB after warm-up")

        print("\ncounts (SDKs' tallies vs the server's stored rows):")
        for key in FLAGS:
            sent_n = sum(f["exposures"][key] for f in finals)
            sent_r = sum(f["rewards"][key] for f in finals)
            got_n, got_r = server_counts(admin, key)
            ok = (sent_n, sent_r) == (got_n, got_r)
            failed |= not ok
            print(f"  {key:11} exposures {sent_n:>10,} sent, {got_n:>10,} stored "
                  f"(lost {max(0, sent_n - got_n):,}, doubled {max(0, got_n - sent_n):,}); "
                  f"rewards {sent_r:>8,} sent, {got_r:>8,} stored "
                  f"(lost {max(0, sent_r - got_r):,}, doubled {max(0, got_r - sent_r):,})"
                  + ("" if ok else "  MISMATCH"))  # fmt: skip
        total = {k: sum(f[k] for f in finals) for k in (
            "decisions", "batches", "batches_failed", "batches_dropped", "decisions_dropped", "duplicates",
            "repeats", "repeats_refused")}  # fmt: skip
        print(f"  decisions {total['decisions']:,}; batches sent {total['batches']:,}, failed "
              f"{total['batches_failed']:,}, dropped {total['batches_dropped']:,}; exposures dropped "
              f"{total['decisions_dropped']:,}; repeated conversions {total['repeats']:,}, refused "
              f"{total['repeats_refused']:,} (stats().duplicates {total['duplicates']:,}); every close() "
              f"delivered: {all(f['delivered'] for f in finals)}")  # fmt: skip
        if total["repeats_refused"] != total["repeats"] or not all(f["delivered"] for f in finals):
            failed = True
        server_log = (tmp / "server.log").read_text(errors="replace")
        tracebacks = server_log.count("Traceback")
        print(f"  server log: {tracebacks} tracebacks")
        failed |= tracebacks > 0
        print("\nFAIL" if failed else "\nPASS: flat memory after warm-up and exact counts")
        return 1 if failed else 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
        if drop is not None:
            drop()
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(logs kept in {tmp})")


if __name__ == "__main__":
    sys.exit(main())
