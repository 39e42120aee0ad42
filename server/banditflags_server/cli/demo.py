"""`banditflags demo`: watch a real bandit learn through the real SDK and server.

Starts the sync server in this process (uvicorn on a loopback port, SQLite in a temporary directory or
``--db``), creates a flag with three variants whose true conversion rates only the simulator knows, and
sends simulated users through ``banditflags.Client`` over HTTP: each user gets a decision, converts with
the rate of the variant they were served, and the conversion is credited with ``track()``. The server
recomputes the weights every few seconds; the terminal shows the weights converging, the observed rates,
P(best), and how few returning users changed variant when the table moved. Ctrl-C stops it cleanly.

The users carry a ``country`` attribute (read by the SDK, never sent). The flag has one targeting rule,
``dach``: users from DE, AT or CH (``--segment-share`` of the traffic) are served by the rule's own
bandit (a segment bandit, DESIGN.md §9), and convert with other rates (``--segment-rates``: by default
green is best there, orange everywhere else). The report shows the rule's weights moving to its own
best arm while the default allocation moves to another.

Example::

    banditflags demo                      # two minutes, 1,500 users a second
    banditflags demo --duration 0         # until Ctrl-C
    banditflags demo --rates 0.10,0.11,0.14 --rate 3000
    banditflags demo --segment-rates 0.09,0.05,0.05 --segment-share 0.5
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
SEGMENT_RULE = "dach"
SEGMENT_COUNTRIES = ("DE", "AT", "CH")
OTHER_COUNTRIES = ("US", "GB", "FR", "ES", "IT", "NL", "SE", "PL", "CA", "BR")
SEGMENT_RULE_JSON: dict[str, Any] = {
    "id": SEGMENT_RULE,
    "clauses": [{"attribute": "country", "op": "in", "values": list(SEGMENT_COUNTRIES)}],
    "serve": {"bandit": True},
}
DEFAULT, SEGMENT = 0, 1  # the two groups of users: the default allocation's and the rule's


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
        "--segment-rates",
        default="0.04,0.08,0.05",
        help="true conversion rates of blue,green,orange for users from DE, AT or CH, served by the own "
        f"bandit of rule {SEGMENT_RULE!r} (default 0.04,0.08,0.05)",
    )
    parser.add_argument(
        "--segment-share",
        type=float,
        default=0.3,
        help="share of the users from DE, AT or CH (default 0.3)",
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
    """What the simulator saw (the server keeps its own counts): users per group (the default allocation,
    the rule), the conversions expected from what was served and from always serving the group's best."""

    users: int = 0
    group_users: list[int] = field(default_factory=lambda: [0, 0])
    expected_conversions: float = 0.0
    best_conversions: float = 0.0


def _parse_rates(text: str, option: str = "--rates") -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"{option}: expected three numbers like 0.04,0.05,0.07, got {text!r}") from None
    if len(rates) != len(DEMO_VARIANTS) or not all(0.0 <= r <= 1.0 for r in rates):
        raise SystemExit(f"{option}: expected three rates between 0 and 1, got {text!r}")
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
        "rules": [SEGMENT_RULE_JSON],
    }
    response = admin.post("/v1/flags", json=body)
    if response.status_code == 409:  # an existing --db: keep the flag and its history, add the rule
        rules = admin.get(f"/v1/flags/{DEMO_FLAG}").json().get("rules") or []
        if not any(r.get("id") == SEGMENT_RULE for r in rules):
            admin.patch(f"/v1/flags/{DEMO_FLAG}", json={"rules": [*rules, SEGMENT_RULE_JSON]})
        return
    response.raise_for_status()


def _variant_lines(
    out: TextIO, rates: list[float], weights: list[float], stats: list[dict[str, Any]]
) -> None:
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


def _report(
    out: TextIO,
    admin: httpx.Client,
    tally: _Tally,
    rates: list[list[float]],
    started: float,
    returning: dict[str, tuple[str, int]],
    last_versions: list[tuple[int, int | None]],
) -> None:
    flag: dict[str, Any] = admin.get(f"/v1/flags/{DEMO_FLAG}").json()
    regret = tally.best_conversions - tally.expected_conversions
    regret_pct = 100.0 * regret / tally.best_conversions if tally.best_conversions else 0.0
    print(
        f"\n[{time.monotonic() - started:5.0f}s] {tally.users:>9,} users · allocation v{flag['version']}"
        f" · state {flag['state']} · regret vs always-best {regret_pct:4.1f}%",
        file=out,
    )
    stats = flag.get("stats") or [{} for _ in DEMO_VARIANTS]
    print(f"   default allocation: everyone else · {tally.group_users[DEFAULT]:,} of these users", file=out)
    _variant_lines(out, rates[DEFAULT], flag["weights"], stats)
    rule = next((r for r in flag.get("rules_report") or [] if r["id"] == SEGMENT_RULE), None)
    rule_version = rule.get("version") if rule is not None else None
    if rule is not None and rule.get("weights"):
        print(
            f"   rule {SEGMENT_RULE!r} (country in {', '.join(SEGMENT_COUNTRIES)}): its own bandit,"
            f" allocation v{rule_version} · {tally.group_users[SEGMENT]:,} of these users",
            file=out,
        )
        _variant_lines(out, rates[SEGMENT], rule["weights"], rule.get("stats") or [])
    versions = (flag["version"], rule_version)
    if versions != last_versions[0]:
        moved = _returning_moved(admin, returning)
        if moved is not None:
            changed, total = moved
            print(
                f"   new tables (default v{flag['version']}, {SEGMENT_RULE} v{rule_version}): {changed:,} of"
                f" {total:,} returning users changed variant (only those whose variant had to shrink)",
                file=out,
            )
        last_versions[0] = versions


def _returning_moved(admin: httpx.Client, returning: dict[str, tuple[str, int]]) -> tuple[int, int] | None:
    """Re-bucket the panel of returning users with the newest tables (the rule's for those from DE, AT
    or CH); count who changed variant."""
    import mmh3

    from banditflags_server.engine.allocation import (
        decode_rle,  # server-side helper; the demo runs in the server,
    )

    config = admin.get("/v1/config").json()
    flag = next((f for f in config["flags"] if f["key"] == DEMO_FLAG), None)
    if flag is None:
        return None
    k = len(flag["variants"])
    table = decode_rle(flag["table"], k)
    rule = (flag.get("rule_allocations") or {}).get(SEGMENT_RULE)
    rule_table = decode_rle(rule["table"], k) if rule is not None else table
    prefix = flag["salt"] + "."
    changed = 0
    for unit, (country, arm) in list(returning.items()):
        served = rule_table if country in SEGMENT_COUNTRIES else table
        new_arm = served[(mmh3.hash(prefix + unit, 0, False) * 10_000) >> 32]
        if new_arm != arm:
            changed += 1
            returning[unit] = (country, new_arm)
    return changed, len(returning)


def _returning_country(unit: str, share: float) -> str:
    """The fixed country of a returning user ``returning-<i>``: the panel has the traffic's mix."""
    i = int(unit.rsplit("-", 1)[1])
    if (i * 0.6180339887) % 1.0 < share:
        return SEGMENT_COUNTRIES[i % len(SEGMENT_COUNTRIES)]
    return OTHER_COUNTRIES[i % len(OTHER_COUNTRIES)]


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the demo until ``--duration`` passes or Ctrl-C; returns the process exit code."""
    from banditflags_server.cli.serve import ServerThread
    from banditflags_server.settings import Settings

    rates = [_parse_rates(args.rates), _parse_rates(args.segment_rates, "--segment-rates")]
    if not 0.0 <= args.segment_share <= 1.0:
        raise SystemExit(f"--segment-share: expected a share between 0 and 1, got {args.segment_share}")
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
                + ", ".join(f"{n} {100 * r:.1f}%" for n, r in zip(DEMO_VARIANTS, rates[DEFAULT], strict=True))
                + " (the bandit does not know them)",
                file=out,
            )
            print(
                f"  rule {SEGMENT_RULE!r}: users from {', '.join(SEGMENT_COUNTRIES)} "
                f"({100 * args.segment_share:.0f}% of the traffic) get the rule's own bandit; "
                "they convert at "
                + ", ".join(
                    f"{n} {100 * r:.1f}%" for n, r in zip(DEMO_VARIANTS, rates[SEGMENT], strict=True)
                ),
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
    rates: list[list[float]],
    rng: random.Random,
    started: float,
) -> None:
    tally = _Tally()
    returning: dict[str, tuple[str, int]] = {}  # the panel of returning users: country, arm
    last_versions: list[tuple[int, int | None]] = [(1, 1)]
    best = [max(r) for r in rates]
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
                    country = _returning_country(unit, args.segment_share)
                else:
                    unit = f"user-{tally.users}"
                    in_segment = rng.random() < args.segment_share
                    country = rng.choice(SEGMENT_COUNTRIES if in_segment else OTHER_COUNTRIES)
                # The SDK reads the attribute to pick the rule; it never sends it anywhere.
                decision: Decision = client.decide(DEMO_FLAG, unit, attributes={"country": country})
                if decision.arm is None:
                    continue
                arm = decision.arm
                group = SEGMENT if decision.rule == SEGMENT_RULE else DEFAULT
                if unit.startswith("returning-"):
                    returning.setdefault(unit, (country, arm))
                tally.users += 1
                tally.group_users[group] += 1
                tally.expected_conversions += rates[group][arm]
                tally.best_conversions += best[group]
                if rng.random() < rates[group][arm]:
                    client.track(decision)  # a conversion; no reward means 0 (DESIGN §3)
            now = time.monotonic()
            if now >= next_report:
                _report(out, admin, tally, rates, started, returning, last_versions)
                next_report = now + args.report_every
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        client.flush(timeout=5.0)
        with contextlib.suppress(httpx.HTTPError):
            _report(out, admin, tally, rates, started, returning, last_versions)
        leader, seg_leader = (DEMO_VARIANTS[max(range(3), key=r.__getitem__)] for r in rates)
        print(
            f"\ndone: {tally.users:,} simulated users; best variant is {leader!r} (for users from "
            f"{', '.join(SEGMENT_COUNTRIES)}, served by rule {SEGMENT_RULE!r}: {seg_leader!r}).",
            file=out,
        )
