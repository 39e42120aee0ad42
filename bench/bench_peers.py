"""``variant()`` against the bare floor and the peers' local evaluation, measured in the same run.

Each SDK evaluates the same flag for the same 100 user ids: three variants split 50/30/20 by a hash
of the user id, evaluated locally from an in-memory definition, with network, polling and event
sending off:

- GrowthBook: an experiment rule in ``features``, one ``GrowthBook`` instance, ``set_attributes`` per
  user then ``get_feature_value`` (and, as its docs show for web requests, a new instance per user);
- Unleash: a ``flexibleRollout`` with weighted variants bootstrapped from a dict, no fetch, metrics
  and registration off; ``get_variant`` with a ``userId`` context;
- LaunchDarkly: a percentage-rollout flag from the file data source, ``send_events=False``;
  ``variation`` with ``Context.create(user)`` (building the context is part of each call, as in use);
- OpenFeature: the SDK's ``InMemoryProvider`` (no split: it has none) with an ``EvaluationContext``
  per call, through ``client.get_string_value``;
- banditflags: ``client.variant`` and ``client.decide`` on a warm client whose threads run (events
  are aggregated and "sent" to an in-process server), no tracer provider installed.

Run in the benchmark environment: bench/run_all.sh (or bench/.venv/bin/python bench/bench_peers.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import compare, config, floor_and_loop, launchdarkly_client, transport, unleash_client

from banditflags import Client

FLAG = "checkout-button"
VARIANTS = ["blue", "green", "red"]


def growthbook(ids: list[str]) -> dict[str, Callable[[str], object]]:
    from growthbook import GrowthBook

    features = {
        FLAG: {
            "defaultValue": "blue",
            "rules": [
                {
                    "key": FLAG,
                    "variations": VARIANTS,
                    "weights": [0.5, 0.3, 0.2],
                    "hashAttribute": "id",
                    "coverage": 1,
                }
            ],
        }
    }
    gb = GrowthBook(attributes={"id": ids[0]}, features=features)

    def shared(u: str) -> object:
        gb.set_attributes({"id": u})
        return gb.get_feature_value(FLAG, "blue")

    def per_request(u: str) -> object:
        return GrowthBook(attributes={"id": u}, features=features).get_feature_value(FLAG, "blue")

    return {"GrowthBook (one instance)": shared, "GrowthBook (instance per request)": per_request}


def unleash(tmp: str) -> tuple[dict[str, Callable[[str], object]], Callable[[], None]]:
    variants = [
        {"name": v, "weight": w, "stickiness": "userId", "weightType": "variable"}
        for v, w in zip(VARIANTS, (500, 300, 200), strict=True)
    ]
    strategy = {
        "name": "flexibleRollout",
        "parameters": {"rollout": "100", "stickiness": "userId", "groupId": FLAG},
    }
    feature = {"name": FLAG, "enabled": True, "strategies": [strategy], "variants": variants}
    client = unleash_client(tmp, feature)
    return {"Unleash": lambda u: client.get_variant(FLAG, {"userId": u})["name"]}, client.destroy


def launchdarkly(tmp: str) -> tuple[dict[str, Callable[[str], object]], Callable[[], None]]:
    from ldclient import Context

    rollout = [{"variation": i, "weight": w} for i, w in enumerate((50_000, 30_000, 20_000))]
    client = launchdarkly_client(
        tmp, FLAG, variations=VARIANTS, fallthrough={"rollout": {"variations": rollout}}
    )
    return {"LaunchDarkly": lambda u: client.variation(FLAG, Context.create(u), "blue")}, client.close


def openfeature() -> dict[str, Callable[[str], object]]:
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    api.set_provider(InMemoryProvider({FLAG: InMemoryFlag("blue", {v: v for v in VARIANTS})}))
    client = api.get_client()
    return {"OpenFeature in-memory": lambda u: client.get_string_value(FLAG, "blue", EvaluationContext(u))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the peers log about their disabled network parts
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    tmp = tempfile.mkdtemp(prefix="bf-bench-")

    client = Client("http://bench", "bf_sdk_bench", transport=transport(config()), max_queue=10_000_000)
    assert client.wait_until_ready(5.0)
    perf = time.perf_counter_ns

    contenders: dict[str, Callable[[str], object]] = {
        "banditflags variant()": lambda u: client.variant(FLAG, u),
        "banditflags decide()": lambda u: client.decide(FLAG, u),
    }
    contenders.update(growthbook(ids))
    more, close_unleash = unleash(tmp)
    contenders.update(more)
    more, close_ld = launchdarkly(tmp)
    contenders.update(more)
    contenders.update(openfeature())

    floor, loop = floor_and_loop(ids)  # the floor, and the timing loop's own cost

    def timer(fn: Callable[[str], object]) -> Callable[[], float]:
        def run() -> float:
            t0 = perf()
            for u in ids:
                fn(u)
            return (perf() - t0) / n

        return run

    # Direct calls for the floor and the loop; the contenders through one lambda each (the same
    # call overhead for all, subtracted along with the loop's).
    call = timer(lambda u: None)
    results = compare(
        {"loop": loop, "call": call, "floor": floor, **{k: timer(f) for k, f in contenders.items()}},
        args.batches,
    )
    loop_ns, call_ns = results["loop"][0], results["call"][0]
    f_med = results["floor"][0] - loop_ns
    bf = results["banditflags variant()"][0] - call_ns
    print(f"{'floor: mmh3.hash + table[bucket]':<36} median {f_med:9.1f} ns")
    for name in contenders:
        med, p99 = results[name]
        med, p99 = med - call_ns, p99 - call_ns
        print(
            f"{name:<36} median {med:9.1f} ns   p99 {p99:9.1f} ns   {med / f_med:6.1f}x floor   "
            f"{med / bf:6.1f}x banditflags variant()"
        )
    verdict = "PASS" if bf <= 1000 and bf <= 5 * f_med else "OVER"
    print(f"variant() budget: median <= 1000 ns and <= 5x the floor: {verdict}")
    client.close()
    close_unleash()
    close_ld()


if __name__ == "__main__":
    main()
