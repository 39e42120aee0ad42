"""One SDK process of a load test: decides ``rate`` distinct units a second for ``seconds`` through
``banditflags.Client``, credits every ``reward_every``-th decision, flushes until the server has
acknowledged everything (bounded), and writes what it counted as JSON.

    python bf_load_worker.py URL SDK_KEY FLAG SECONDS RATE REWARD_EVERY PREFIX OUT.json

Counted: ``exposures`` = decisions answered with reason ``split`` (the ones the SDK reports),
``rewards`` = ``track()`` calls that returned True, and the client's own stats at the end.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import banditflags


def main() -> int:
    url, key, flag, seconds, rate, reward_every, prefix, out = sys.argv[1:9]
    client = banditflags.Client(url, key, flush_interval=0.25, refresh_interval=1.0, request_timeout=2.0)
    if not client.wait_until_ready(30.0):
        print("not ready", file=sys.stderr)
        return 2
    exposures = rewards = decisions = 0
    per_tick = max(1, int(float(rate) / 100))
    every = int(reward_every)
    t0 = time.monotonic()
    end = t0 + float(seconds)
    i = 0
    while time.monotonic() < end:
        for _ in range(per_tick):
            d = client.decide(flag, f"{prefix}-{i}")
            i += 1
            decisions += 1
            if d.reason == "split":
                exposures += 1
                if i % every == 0 and client.track(d):
                    rewards += 1
        # Pace to the rate (100 ticks a second), never faster.
        next_at = t0 + i / float(rate)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    flushed = client.flush(timeout=60.0)
    stats = dataclasses.asdict(client.stats())
    client.close(timeout=10.0)
    with open(out, "w") as fh:
        json.dump(
            {
                "decisions": decisions,
                "exposures": exposures,
                "rewards": rewards,
                "flushed": flushed,
                "stats": stats,
            },
            fh,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
