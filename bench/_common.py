"""Helpers shared by the benchmarks: a config with many flags, an in-process config server, timing.

Timing: calls are timed in small batches with ``perf_counter_ns`` (one call is too short to time
alone); medians and p99s are over the per-call means of the batches, and the benchmarks interleave
the things they compare so that both see the same machine state.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import mmh3

SALT = "3f0c9a1e5d7b2a4c"
#: The decoded table of :func:`flag` (50/30/20), for the bare bucketing floor.
TABLE = bytes([0] * 5000 + [1] * 3000 + [2] * 2000)


def flag(key: str = "checkout-button", salt: str = SALT) -> dict[str, Any]:
    """A 3-variant running flag with a 50/30/20 table."""
    return {
        "key": key,
        "salt": salt,
        "state": "running",
        "exploration": 1.0,
        "version": 1,
        "control": "blue",
        "weights": [0.5, 0.3, 0.2],
        "variants": [
            {"key": "blue", "value": "#00f"},
            {"key": "green", "value": "#0f0"},
            {"key": "red", "value": "#f00"},
        ],
        "table": [[0, 5000], [1, 3000], [2, 2000]],
        "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
        "policy": "thompson",
    }


def config(n_flags: int = 1) -> dict[str, Any]:
    """A config payload; the first flag is ``checkout-button``, the others ``flag-<i>``."""
    flags = [flag()] + [flag(f"flag-{i}", f"salt{i:012d}") for i in range(1, n_flags)]
    return {"schema": 1, "revision": 1, "flags": flags}


def transport(payload: dict[str, Any]) -> httpx.MockTransport:
    """An in-process server answering ``/v1/config`` with ``payload``, 202 to events and 404 to the
    stream (the clients poll once; nothing changes during a benchmark)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config":
            return httpx.Response(200, json=payload, headers={"ETag": '"1"'})
        if request.url.path == "/v1/events":
            return httpx.Response(202, json={"duplicate": False})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such endpoint"}})

    return httpx.MockTransport(handler)


def floor_and_loop(ids: list[str]) -> tuple[Callable[[], float], Callable[[], float]]:
    """Timers (ns per call over ``ids``) of the bare floor ``mmh3.hash(salt.unit) + table[bucket]`` and
    of the empty timing loop (subtracted from both sides by the callers)."""
    perf = time.perf_counter_ns
    keys = [f"{SALT}.{u}" for u in ids]
    h, table, n = mmh3.hash, TABLE, len(ids)

    def floor() -> float:
        t0 = perf()
        for k in keys:
            table[(h(k, 0, False) * 10_000) >> 32]
        return (perf() - t0) / n

    def loop() -> float:
        t0 = perf()
        for _ in ids:
            pass
        return (perf() - t0) / n

    return floor, loop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def batch_timer(fn: Callable[[int], None], n: int) -> Callable[[], float]:
    """``() -> ns per call`` for ``fn(i)`` called ``n`` times in a loop."""
    perf = time.perf_counter_ns
    rng = range(n)

    def run() -> float:
        t0 = perf()
        for i in rng:
            fn(i)
        return (perf() - t0) / n

    return run


def compare(timers: dict[str, Callable[[], float]], batches: int, between: Callable[[], None] | None = None):
    """Run every timer ``batches`` times, interleaved; return name -> (median, p99) in ns."""
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for t in timers.values():  # warm up
        t()
    gc.collect()
    gc.disable()
    try:
        for _ in range(batches):
            for name, t in timers.items():
                samples[name].append(t())
                if between is not None:
                    between()
    finally:
        gc.enable()
    return {k: (statistics.median(v), percentile(v, 0.99)) for k, v in samples.items()}


def launchdarkly_client(tmp: str, key: str, **fields: Any) -> Any:
    """A LaunchDarkly client serving one flag (``fields`` over a plain on-flag) from the file data
    source: no network, no events, no diagnostics."""
    import ldclient
    from ldclient.config import Config
    from ldclient.integrations import Files

    flag = {"key": key, "on": True, "version": 1, "salt": SALT, "offVariation": 0, "targets": [], "rules": []}
    flag.update(prerequisites=[], trackEvents=False, trackEventsFallthrough=False, **fields)
    path = os.path.join(tmp, f"ld-{key}.json")
    with open(path, "w") as fh:
        json.dump({"flags": {key: flag}}, fh)
    client = ldclient.LDClient(
        Config(
            "sdk-bench",
            update_processor_class=Files.new_data_source(paths=[path]),
            send_events=False,
            diagnostic_opt_out=True,
        )
    )
    assert client.is_initialized()
    return client


def unleash_client(tmp: str, feature: dict[str, Any]) -> Any:
    """An Unleash client bootstrapped with one feature: no fetch, no metrics, no registration."""
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    cache = FileCache(f"bench-{feature['name']}", directory=tmp)
    cache.bootstrap_from_dict({"version": 1, "features": [feature]})
    client = UnleashClient(
        url="http://127.0.0.1:9",  # never contacted
        app_name="bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
        refresh_interval=86_400,
    )
    client.initialize_client(fetch_toggles=False)
    return client
