"""Quick start: create a flag, decide for a few users, credit rewards, read the server's view.

Run it against a server you started with ``banditflags serve`` (it prints the keys on first start)::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_ADMIN_KEY=... BANDITFLAGS_SDK_KEY=... \\
        python examples/quickstart.py
"""

from __future__ import annotations

import os
import random

import httpx

import banditflags

URL = os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080")
ADMIN_KEY = os.environ["BANDITFLAGS_ADMIN_KEY"]
SDK_KEY = os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0]
FLAG = os.environ.get("QUICKSTART_FLAG", "quickstart-banner")


def main() -> None:
    admin = httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10.0)
    created = admin.post(
        "/v1/flags",
        json={
            "key": FLAG,
            "variants": ["control", "bold", "playful"],  # plain strings: key == value
            "control": "control",
            "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
            "policy": {"name": "thompson", "burn_in": 50},
        },
    )
    if created.status_code not in (201, 409):  # 409: it exists from an earlier run
        raise SystemExit(f"could not create the flag: {created.text}")

    with banditflags.Client(URL, sdk_key=SDK_KEY) as client:
        client.wait_until_ready(timeout=5.0)
        rng = random.Random(1)
        for i in range(2_000):
            decision = client.decide(FLAG, f"user-{i}")
            if i < 3:
                print(
                    f"user-{i}: {decision.variant!r} (reason {decision.reason}, version {decision.version},"
                    f" propensity {decision.propensity:.2f}, token {decision.token})"
                )
            if decision.variant == "playful" and rng.random() < 0.3:
                client.track(decision)  # reward 1.0: a conversion
        print("flushed:", client.flush(timeout=5.0))

    flag = admin.post(f"/v1/flags/{FLAG}/recompute").json()
    print(
        "weights after one recompute:",
        dict(zip([v["key"] for v in flag["variants"]], flag["weights"], strict=True)),
    )
    for st in flag["stats"]:
        print(f"  {st['variant']:<8} n={st['n']:>5}  mean={st['mean']}  P(best)={st['p_best']}")


if __name__ == "__main__":
    main()
