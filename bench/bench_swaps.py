"""Before/after a library swap, in one run: the same server measured from two git revisions.

Issue 10 swapped hand-written parts for the field's libraries (msgspec schemas, prometheus-client,
the SDK's SSE parser) and keeps each swap only if it does not make the hot paths or the SDK's footprint
worse. This bench checks out two revisions side by side (``git worktree``, under a temporary directory)
and measures both with the same interpreter and packages, alternating rounds so that a noisy neighbour
hits both alike:

- ``POST /v1/events`` batches per second (3 exposure + 3 reward rows, a fresh ``batch_id`` each, every
  one committed before its 202) and ``GET /v1/config`` 304 polls per second, with wrk (Debian's
  package) on loopback, p99 beside each;
- ``import banditflags`` wall time in a fresh interpreter (median of ``--imports`` runs) and the number
  of modules it loads;
- the SDK's own size (bytes of ``sdk/banditflags``) and its declared dependencies.

Run:  python bench/bench_swaps.py --before 235dd12 --after HEAD [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import free_port, load, stop, wait_up

ROOT = Path(__file__).resolve().parent.parent
ADMIN, SDK = "bf_admin_" + secrets.token_urlsafe(24), "bf_sdk_" + secrets.token_urlsafe(24)


def checkout(ref: str, where: Path) -> Path:
    tree = where / ref.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    return tree


def env_for(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env["PYTHONPATH"] = f"{tree / 'sdk'}{os.pathsep}{tree / 'server'}"
    return env


def server_round(tree: Path, tmp: Path, args: argparse.Namespace) -> dict[str, tuple[float, float, int]]:
    port = free_port()
    env = env_for(tree)
    env.update(BANDITFLAGS_ADMIN_KEY=ADMIN, BANDITFLAGS_SDK_KEY=SDK)
    db = tmp / f"swap-{secrets.token_hex(4)}.db"
    log = open(tmp / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditflags_server", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", str(db), "--recompute-interval", "3600"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/healthz", proc)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = httpx.post(base + "/v1/flags", headers=admin, json={"key": "bench", "variants": ["a", "b", "c"]})
        assert r.status_code == 201, r.text
        sdk = {"Authorization": f"Bearer {SDK}"}
        etag = httpx.get(base + "/v1/config", headers=sdk).headers["etag"]
        out = {
            "config": load(base + "/v1/config", args, {**sdk, "If-None-Match": etag}, None),
            "events": load(base + "/v1/events", args, sdk, "/v1/events"),
        }
        flag = httpx.get(base + "/v1/flags/bench", headers=admin).json()
        out["counted"] = (float(sum(v["n"] for v in flag["stats"])), 0.0, 0)
        return out
    finally:
        stop(proc)
        log.close()


def import_time(tree: Path, runs: int) -> tuple[float, int]:
    code = (
        "import sys, time; t = time.perf_counter(); import banditflags; "
        "print(time.perf_counter() - t, len(sys.modules))"
    )
    times, mods = [], 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], env=env_for(tree), capture_output=True, text=True)
        t, m = out.stdout.split()
        times.append(float(t))
        mods = int(m)
    return statistics.median(times), mods


def sdk_size(tree: Path) -> tuple[int, list[str]]:
    size = sum(p.stat().st_size for p in (tree / "sdk" / "banditflags").rglob("*.py"))
    text = (tree / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = [line.strip().strip(",").strip('"') for line in deps.splitlines() if line.strip().startswith('"')]
    return size, names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--imports", type=int, default=15)
    args = ap.parse_args()
    args.generator = "wrk"
    tmp = Path(tempfile.mkdtemp(prefix="bf-swaps-"))
    trees = {"before": checkout(args.before, tmp), "after": checkout(args.after, tmp)}
    print(f"before = {args.before}, after = {args.after}; wrk, {args.connections} connections, "
          f"{args.seconds} s per run, {args.rounds} alternating rounds; {os.cpu_count()} cores")  # fmt: skip
    runs: dict[str, list[dict[str, tuple[float, float, int]]]] = {"before": [], "after": []}
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(server_round(tree, tmp, args))
        head = f"{'events/s':>10}{'p99 ms':>9}{'config/s':>10}{'p99 ms':>9}{'errors':>8}"
        print(f"\n{'':<8}{head}  exposures counted")
        med: dict[str, dict[str, float]] = {}
        for name, rs in runs.items():
            m = {
                "events": statistics.median(r["events"][0] for r in rs),
                "events_p99": statistics.median(r["events"][1] for r in rs),
                "config": statistics.median(r["config"][0] for r in rs),
                "config_p99": statistics.median(r["config"][1] for r in rs),
            }
            med[name] = m
            errors = sum(r["events"][2] + r["config"][2] for r in rs)
            counted = ", ".join(f"{r['counted'][0]:.0f}" for r in rs)
            print(f"{name:<8}{m['events']:>10.0f}{m['events_p99']:>9.2f}{m['config']:>10.0f}"
                  f"{m['config_p99']:>9.2f}{errors:>8}  {counted}")  # fmt: skip
        print(f"after/before: events {med['after']['events'] / med['before']['events']:.2f}x, "
              f"config {med['after']['config'] / med['before']['config']:.2f}x")  # fmt: skip
        print()
        for name, tree in trees.items():
            t, mods = import_time(tree, args.imports)
            size, deps = sdk_size(tree)
            print(f"{name:<8} import banditflags {t * 1000:6.1f} ms ({mods} modules in sys.modules); "
                  f"sdk/banditflags {size / 1024:.0f} KiB of .py; deps: {', '.join(deps)}")  # fmt: skip
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
