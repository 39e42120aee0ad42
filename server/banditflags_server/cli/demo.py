"""`banditflags demo`: watch a real bandit learn through the real SDK and server.

Starts the sync server in this process (uvicorn on a loopback port, SQLite in a temporary directory or
``--db``), creates a flag with three variants whose true conversion rates only the simulator knows, and
sends simulated users through ``banditflags.Client`` over HTTP: each user gets a decision, converts with
the rate of the variant they were served, and the conversion is credited with ``track()``. The server
recomputes the weights every few seconds; the terminal shows the weights converging, the observed rates,
P(best), and how few returning users changed variant when the table moved. Ctrl-C stops it cleanly.

Example::

    banditflags demo                      # two minutes, 1,500 users a second
    banditflags demo --duration 0         # until Ctrl-C
    banditflags demo --rates 0.10,0.11,0.14 --rate 3000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from banditflags import Client, Decision

DEMO_FLAG = "checkout-button"
DEMO_VARIANTS = ("blue", "green", "orange")
RETURNING_USERS = 2_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's options on its ``argparse`` sub-parser."""
    parser.add_argument("--db", help="SQLite file or database URL (default: a temporary SQLite file)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free port)")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds to run; 0 runs until Ctrl-C (default 120)"
    )
    parser.add_argument("--rate", type=int, default=1_500, help="simulated users per second (default 1500)")
    parser.add_argument(
        "--rates",
        default="0.04,0.05,0.07",
        help="true conversion rates of blue,green,orange (default 0.04,0.05,0.07)",
    )
    parser.add_argument(
        "--recompute-interval",
        type=float,
        default=3.0,
        help="seconds between weight updates of the demo flag (default 3)",
    )
    parser.add_argument("--report-every", type=float, default=3.0, help="seconds between reports (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated users")


@dataclass
class _Tally:
    """What the simulator saw, per variant (the server keeps its own counts)."""

    served: list[int] = field(default_factory=lambda: [0, 0, 0])
    converted: list[int] = field(default_factory=lambda: [0, 0, 0])
    users: int = 0
    expected_conversions: float = 0.0


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"--rates: expected three numbers like 0.04,0.05,0.07, got {text!r}") from None
    if len(rates) != len(DEMO_VARIANTS) or not all(0.0 <= r <= 1.0 for r in rates):
        raise SystemExit(f"--rates: expected three rates between 0 and 1, got {text!r}")
    return rates


def _bar(share: float, width: int = 24) -> str:
    filled = round(share * width)
    return "█" * filled + "·" * (width - filled)


def _create_flag(admin: httpx.Client, recompute_interval: float) -> None:
    body = {
        "key": DEMO_FLAG,
        "description": "banditflags demo: which button colour converts best?",
        "variants": [{"key": k, "value": k} for k in DEMO_VARIANTS],
        "control": DEMO_VARIANTS[0],
        "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
        "policy": {"name": "thompson", "floor": 0.01, "burn_in": 200},
        "recompute_interval": recompute_interval,
    }
    response = admin.post("/v1/flags", json=body)
    if response.status_code == 409:  # an existing --db: keep the flag and its history
        return
    response.raise_for_status()


def _report(
    out: TextIO,
    admin: httpx.Client,
    tally: _Tally,
    rates: list[float],
    started: float,
    returning: dict[str, int],
    last_version: list[int],
) -> None:
    flag: dict[str, Any] = admin.get(f"/v1/flags/{DEMO_FLAG}").json()
    weights: list[float] = flag["weights"]
    stats: list[dict[str, Any]] = flag.get("stats") or [{} for _ in DEMO_VARIANTS]
    best = max(rates)
    regret = tally.users * best - tally.expected_conversions
    regret_pct = 100.0 * regret / (tally.users * best) if tally.users else 0.0
    print(
        f"\n[{time.monotonic() - started:5.0f}s] {tally.users:>9,} users · allocation v{flag['version']}"
        f" · state {flag['state']} · regret vs always-best {regret_pct:4.1f}%",
        file=out,
    )
    for i, name in enumerate(DEMO_VARIANTS):
        st = stats[i] if i < len(stats) else {}
        mean = st.get("mean")
        p_best = st.get("p_best")
        observed = f"{100 * mean:5.2f}%" if isinstance(mean, (int, float)) else "   - "
        pb = f"{p_best:4.2f}" if isinstance(p_best, (int, float)) else "  - "
        print(
            f"   {name:<7} true {100 * rates[i]:5.2f}%  {_bar(weights[i])} {100 * weights[i]:5.1f}%"
            f"   observed {observed} (n={st.get('n', 0):>7,})  P(best) {pb}",
            file=out,
        )
    if flag["version"] != last_version[0]:
        moved = _returning_moved(admin, returning)
        if moved is not None:
            changed, total = moved
            print(
                f"   new table v{flag['version']}: {changed:,} of {total:,} returning users changed variant"
                " (only those whose variant had to shrink)",
                file=out,
            )
        last_version[0] = flag["version"]


def _returning_moved(admin: httpx.Client, returning: dict[str, int]) -> tuple[int, int] | None:
    """Re-bucket the panel of returning users with the newest table; count who changed variant."""
    import mmh3

    from banditflags_server.engine.allocation import (
        decode_rle,  # server-side helper; the demo runs in the server,
    )

    config = admin.get("/v1/config").json()
    flag = next((f for f in config["flags"] if f["key"] == DEMO_FLAG), None)
    if flag is None:
        return None
    table = decode_rle(flag["table"], len(flag["variants"]))
    prefix = flag["salt"] + "."
    changed = 0
    for unit, arm in list(returning.items()):
        new_arm = table[(mmh3.hash(prefix + unit, 0, False) * 10_000) >> 32]
        if new_arm != arm:
            changed += 1
            returning[unit] = new_arm
    return changed, len(returning)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the demo until ``--duration`` passes or Ctrl-C; returns the process exit code."""
    from banditflags_server.cli.serve import ServerThread
    from banditflags_server.settings import Settings

    rates = _parse_rates(args.rates)
    rng = random.Random(args.seed)
    tmpdir = None
    db = args.db
    if db is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="banditflags-demo-")
        db = os.path.join(tmpdir.name, "demo.db")
    admin_key = "bf_admin_" + secrets.token_urlsafe(24)
    sdk_key = "bf_sdk_" + secrets.token_urlsafe(24)
    settings = Settings(
        db=db,
        host=args.host,
        port=args.port,
        admin_keys=(admin_key,),
        sdk_keys=(sdk_key,),
        recompute_interval=args.recompute_interval,
        recompute_tick=0.5,
        log_level="warning",
    )
    started = time.monotonic()
    try:
        with ServerThread(settings) as server:
            print(f"banditflags demo: server at {server.url}  (SQLite: {db})", file=out)
            print(f"  admin key for this run: {admin_key}", file=out)
            print(f"  console: {server.url}/console/ (sign in with the admin key)", file=out)
            print(
                f"  try: curl -H 'Authorization: Bearer {admin_key}' {server.url}/v1/flags/{DEMO_FLAG}",
                file=out,
            )
            print(
                f"  flag {DEMO_FLAG!r}: true conversion rates "
                + ", ".join(f"{n} {100 * r:.1f}%" for n, r in zip(DEMO_VARIANTS, rates, strict=True))
                + " (the bandit does not know them)",
                file=out,
            )
            print("  Ctrl-C stops the demo.", file=out)
            with httpx.Client(
                base_url=server.url, timeout=10.0, headers={"Authorization": f"Bearer {admin_key}"}
            ) as admin:
                _create_flag(admin, args.recompute_interval)
                with Client(server.url, sdk_key=sdk_key, refresh_interval=0.5, flush_interval=0.5) as client:
                    if not client.wait_until_ready(timeout=10.0):
                        print("the SDK could not load its configuration from the server", file=sys.stderr)
                        return 1
                    _simulate(args, out, client, admin, rates, rng, started)
                    client.flush(timeout=5.0)
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C).", file=out)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    return 0


def _simulate(
    args: argparse.Namespace,
    out: TextIO,
    client: Client,
    admin: httpx.Client,
    rates: list[float],
    rng: random.Random,
    started: float,
) -> None:
    tally = _Tally()
    returning: dict[str, int] = {}
    last_version = [1]
    tick = 0.05
    per_tick = max(1, round(args.rate * tick))
    next_report = started + args.report_every
    deadline = started + args.duration if args.duration > 0 else float("inf")
    next_tick = time.monotonic()
    try:
        while time.monotonic() < deadline:
            for _ in range(per_tick):
                # a tenth of the traffic comes from a fixed panel of returning users (stickiness check)
                if rng.random() < 0.1:
                    unit = f"returning-{rng.randrange(RETURNING_USERS)}"
                else:
                    unit = f"user-{tally.users}"
                decision: Decision = client.decide(DEMO_FLAG, unit)
                if decision.arm is None:
                    continue
                arm = decision.arm
                if unit.startswith("returning-"):
                    returning.setdefault(unit, arm)
                tally.users += 1
                tally.served[arm] += 1
                tally.expected_conversions += rates[arm]
                if rng.random() < rates[arm]:
                    tally.converted[arm] += 1
                    client.track(decision)  # a conversion; no reward means 0 (DESIGN §3)
            now = time.monotonic()
            if now >= next_report:
                _report(out, admin, tally, rates, started, returning, last_version)
                next_report = now + args.report_every
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        client.flush(timeout=5.0)
        with contextlib.suppress(httpx.HTTPError):
            _report(out, admin, tally, rates, started, returning, last_version)
        best = max(range(len(rates)), key=rates.__getitem__)
        print(f"\ndone: {tally.users:,} simulated users; best variant is {DEMO_VARIANTS[best]!r}.", file=out)
