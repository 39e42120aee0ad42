"""Targeting (DESIGN.md §8, §9): a 5-rule flag against the hash floor and the peers, in one run.

The flag has 5 rules of 2 clauses each; every unit matches only the last rule, which serves a fixed
50/30/20 split, so a decision evaluates all five rules and then buckets into that rule's table:

1. ``country in [de, fr]`` and ``plan in [pro]``              → green
2. ``email ends_with @corp.test`` and ``age >= 18``            → green
3. ``app_version semver_lt 2.0.0`` and ``plan in [free]``      → green
4. ``email contains +test`` and ``country in [us]``            → green
5. ``country in [us, ca]`` and ``age >= 21``                   → 50/30/20 split by unit

- banditflags ``client.variant(flag, unit, attributes=...)``: the real client (config from an
  in-process server, background threads on, exposures recorded), the flag carrying the 5 rules;
  beside it the same client's ``variant()`` on a flag without rules, the price of a plain decision;
- banditflags evaluator alone: the compiled evaluator (``_targeting.compile_flag``) plus the
  bucketing into the matched rule's table (``mmh3.hash`` + index), without the client around it;
- LaunchDarkly: the same rules as clauses (``endsWith``, ``contains``, ``semVerLessThan``,
  ``greaterThanOrEqual``) with a rollout on the last, from the file data source, events off; a
  ``Context`` built per call (as in use) and, separately, one built ahead;
- GrowthBook: the same rules as conditions (``$regex`` for ends-with and contains, ``$vlt``,
  ``$gte``), force rules and an experiment rule; ``set_attributes`` then ``get_feature_value``;
- Unleash: the same rules as strategy constraints (``STR_ENDS_WITH``, ``STR_CONTAINS``,
  ``SEMVER_LT``, ``NUM_GTE``), bootstrapped, no network; ``get_variant`` with a context per call.

Each contender is checked to serve a split variant for these units (and green to a unit matching
rule 1) before timing. Calls are timed in batches of 100 distinct units with ``perf_counter_ns``,
interleaved; medians over batches. The machine is shared, so read medians and same-run ratios.

Run: bench/.venv/bin/python bench/bench_targeting.py [--batches 300]   (made by bench/run_all.sh)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mmh3
from _common import SALT, TABLE, compare, floor_and_loop, launchdarkly_client, transport, unleash_client
from _common import flag as plain_flag

from banditflags import Client
from banditflags._targeting import FlagTargeting, compile_flag

FLAG = "checkout-button"
VARIANTS = ["blue", "green", "red"]
SPLIT = (0.5, 0.3, 0.2)
Attrs = dict[str, Any]
Contender = Callable[[str, Attrs], object]

RULES: list[tuple[str, list[tuple[str, str, list[Any]]]]] = [
    ("r1", [("country", "in", ["de", "fr"]), ("plan", "in", ["pro"])]),
    ("r2", [("email", "ends_with", ["@corp.test"]), ("age", "gte", [18])]),
    ("r3", [("app_version", "semver_lt", ["2.0.0"]), ("plan", "in", ["free"])]),
    ("r4", [("email", "contains", ["+test"]), ("country", "in", ["us"])]),
    ("r5", [("country", "in", ["us", "ca"]), ("age", "gte", [21])]),
]


def attributes(unit: str) -> Attrs:
    """A unit that matches only rule 5."""
    return {
        "country": "us",
        "plan": "team",
        "email": f"{unit}@example.com",
        "age": 34,
        "app_version": "2.3.1",
    }


def rules_json() -> list[dict[str, Any]]:
    return [
        {
            "id": rid,
            "clauses": [{"attribute": a, "op": op, "values": v} for a, op, v in clauses],
            "serve": {"weights": list(SPLIT)} if rid == "r5" else {"variant": "green"},
        }
        for rid, clauses in RULES
    ]


def client() -> tuple[dict[str, Contender], dict[str, Contender], Callable[[], None]]:
    """The real client: the 5-rule flag, and (unchecked: it has no rules) a plain flag."""
    payload = {"schema": 1, "revision": 1, "flags": [{**plain_flag(FLAG), "rules": rules_json()}]}
    payload["flags"].append(plain_flag("plain", "0123456789abcdef"))
    c = Client("http://bench", "bf_sdk_bench", transport=transport(payload), max_queue=10_000_000)
    assert c.wait_until_ready(5.0), "config did not load"
    v = c.variant
    ours = {"banditflags client.variant, 5-rule flag": lambda u, a: v(FLAG, u, attributes=a)}
    return ours, {"banditflags client.variant, plain flag": lambda u, a: v("plain", u)}, c.close


def banditflags() -> Contender:
    t = compile_flag({"rules": rules_json()}, VARIANTS)
    assert isinstance(t, FlagTargeting), t
    evaluate, h, prefix, default = t.evaluate, mmh3.hash, SALT + ".", TABLE

    def decide(unit: str, attrs: Attrs) -> str:
        m = evaluate(unit, attrs)
        table = default if m is None else m.table  # no table: a fixed variant or a target
        arm = m.variant if table is None else table[(h(prefix + unit, 0, False) * 10_000) >> 32]  # type: ignore[union-attr]
        return VARIANTS[arm]  # type: ignore[index]

    return decide


def launchdarkly(tmp: str) -> tuple[dict[str, Contender], Callable[[], None]]:
    from ldclient import Context

    ops = {"in": "in", "ends_with": "endsWith", "contains": "contains", "semver_lt": "semVerLessThan"}
    ops["gte"] = "greaterThanOrEqual"
    rollout = {"variations": [{"variation": i, "weight": int(w * 100_000)} for i, w in enumerate(SPLIT)]}
    rules = []
    for rid, clauses in RULES:
        rule: dict[str, Any] = {
            "id": rid,
            "clauses": [
                {"attribute": a, "op": ops[op], "values": v, "negate": False} for a, op, v in clauses
            ],
        }
        rule.update({"rollout": rollout} if rid == "r5" else {"variation": 1})
        rules.append(rule)
    client = launchdarkly_client(tmp, FLAG, variations=VARIANTS, fallthrough={"variation": 0}, rules=rules)

    def context(unit: str, attrs: Attrs) -> Any:
        b = Context.builder(unit)
        for k, v in attrs.items():
            b.set(k, v)
        return b.build()

    prebuilt: dict[str, Any] = {}

    def ahead(unit: str, attrs: Attrs) -> object:
        ctx = prebuilt.get(unit)
        if ctx is None:
            ctx = prebuilt[unit] = context(unit, attrs)
        return client.variation(FLAG, ctx, "blue")

    return {
        "LaunchDarkly": lambda u, a: client.variation(FLAG, context(u, a), "blue"),
        "LaunchDarkly (context built ahead)": ahead,
    }, client.close


def growthbook() -> dict[str, Contender]:
    from growthbook import GrowthBook

    def condition(clauses: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
        cond: dict[str, Any] = {}
        for a, op, v in clauses:
            if op == "in":
                cond[a] = {"$in": v}
            elif op == "ends_with":
                cond[a] = {"$regex": f"{v[0].replace('.', '[.]')}$"}
            elif op == "contains":
                cond[a] = {"$regex": v[0].replace("+", "[+]")}
            elif op == "semver_lt":
                cond[a] = {"$vlt": v[0]}
            else:
                cond[a] = {"$gte": v[0]}
        return cond

    rules: list[dict[str, Any]] = [
        {"condition": condition(c), "force": "green"} for rid, c in RULES if rid != "r5"
    ]
    rules.append(
        {
            "key": FLAG,
            "condition": condition(RULES[-1][1]),
            "variations": VARIANTS,
            "weights": list(SPLIT),
            "hashAttribute": "id",
            "coverage": 1,
        }
    )
    gb = GrowthBook(attributes={"id": "x"}, features={FLAG: {"defaultValue": "blue", "rules": rules}})

    def evaluate(unit: str, attrs: Attrs) -> object:
        gb.set_attributes({"id": unit, **attrs})
        return gb.get_feature_value(FLAG, "blue")

    return {"GrowthBook": evaluate}


def unleash(tmp: str) -> tuple[dict[str, Contender], Callable[[], None]]:
    ops = {"in": "IN", "ends_with": "STR_ENDS_WITH", "contains": "STR_CONTAINS", "semver_lt": "SEMVER_LT"}
    ops["gte"] = "NUM_GTE"

    def constraint(attribute: str, op: str, values: list[Any]) -> dict[str, Any]:
        c: dict[str, Any] = {"contextName": attribute, "operator": ops[op], "inverted": False}
        if op in ("gte", "semver_lt"):  # Unleash's single-value operators take "value"
            c["value"] = str(values[0])
        else:
            c["values"] = [str(x) for x in values]
        return c

    def strategy(rid: str, clauses: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
        weights = SPLIT if rid == "r5" else (0.0, 1.0, 0.0)
        variants = [
            {"name": v, "weight": int(w * 1000), "stickiness": "userId", "weightType": "variable"}
            for v, w in zip(VARIANTS, weights, strict=True)
            if w
        ]
        return {
            "name": "flexibleRollout",
            "parameters": {"rollout": "100", "stickiness": "userId", "groupId": FLAG},
            "constraints": [constraint(a, op, v) for a, op, v in clauses],
            "variants": variants,
        }

    strategies = [strategy(rid, c) for rid, c in RULES]
    client = unleash_client(tmp, {"name": FLAG, "enabled": True, "strategies": strategies, "variants": []})
    props: dict[str, dict[str, str]] = {}  # Unleash properties are strings: converted once per unit

    def evaluate(unit: str, attrs: Attrs) -> object:
        p = props.get(unit)
        if p is None:
            p = props[unit] = {k: str(v) for k, v in attrs.items()}
        return client.get_variant(FLAG, {"userId": unit, "properties": p})["name"]

    return {"Unleash": evaluate}, client.destroy


def check(contenders: dict[str, Contender], ids: list[str]) -> None:
    """Every contender implements the same flag: rule 5's split for these units, green for rule 1."""
    for name, fn in contenders.items():
        served = [fn(u, attributes(u)) for u in ids]
        assert set(served) <= set(VARIANTS) and len(set(served)) == 3, (name, set(served))
        rule1 = {**attributes("probe"), "country": "de", "plan": "pro"}
        assert fn("probe", rule1) == "green", (name, fn("probe", rule1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--no-peers", action="store_true", help="banditflags and the floor only")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the peers log about their disabled network parts
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    pairs = [(u, attributes(u)) for u in ids]
    tmp = tempfile.mkdtemp(prefix="bf-bench-")
    perf = time.perf_counter_ns

    ours, plain, close_client = client()
    contenders: dict[str, Contender] = {**ours, "banditflags evaluator + bucketing": banditflags()}
    closers: list[Callable[[], None]] = [close_client]
    if not args.no_peers:
        for make in (launchdarkly, unleash):
            more, close = make(tmp)
            contenders.update(more)
            closers.append(close)
        contenders.update(growthbook())
    check(contenders, ids)
    contenders.update(plain)

    floor, loop = floor_and_loop(ids)

    def timer(fn: Contender) -> Callable[[], float]:
        def run() -> float:
            t0 = perf()
            for u, a in pairs:
                fn(u, a)
            return (perf() - t0) / n

        return run

    # The contenders are called through the same loop and one Python call each; that call's cost
    # ("call", an empty function) is subtracted from them, the bare loop's from the floor.
    results = compare(
        {
            "loop": loop,
            "call": timer(lambda u, a: None),
            "floor": floor,
            **{k: timer(f) for k, f in contenders.items()},
        },
        args.batches,
    )
    loop_ns, call_ns = results["loop"][0], results["call"][0]
    f_med = results["floor"][0] - loop_ns
    ours = results["banditflags client.variant, 5-rule flag"][0] - call_ns
    print(f"{'floor: mmh3.hash + table[bucket]':<40} median {f_med:9.1f} ns")
    for name in contenders:
        med, p99 = (x - call_ns for x in results[name])
        print(
            f"{name:<40} median {med:9.1f} ns   p99 {p99:9.1f} ns   {med / f_med:6.1f}x floor   "
            f"{med / ours:6.1f}x banditflags"
        )
    verdict = "PASS" if ours <= 2000 else "OVER"
    print(f"targeting budget: client.variant, 5-rule flag, median <= 2000 ns: {verdict} ({ours:.0f} ns)")
    for close in closers:
        close()


if __name__ == "__main__":
    main()
