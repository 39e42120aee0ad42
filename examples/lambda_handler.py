"""An AWS Lambda handler using banditflags without any background thread.

``Serverless()`` reads ``BANDITFLAGS_URL`` and ``BANDITFLAGS_SDK_KEY`` (and, for a cold start without
a network call, ``BANDITFLAGS_BOOTSTRAP``: a ``GET /v1/config`` body or a path to one). Created at
module level, it survives between warm invocations with its configuration and any events not yet
delivered. Each invocation refreshes the configuration only when it is older than the TTL (with a
short timeout) and flushes before returning, within the time Lambda has left minus a margin.

Events: ``{"user": "u-1"}`` decides the checkout button for a user; ``{"token": "bf1:..."}`` credits a
conversion to that decision.
"""

from __future__ import annotations

import os
from typing import Any

from banditflags.serverless import Serverless

FLAG = os.environ.get("EXAMPLE_FLAG", "checkout-button")

flags = Serverless(ttl=float(os.environ.get("BANDITFLAGS_TTL", "30")))


@flags.lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "token" in event:
        return {"credited": flags.client.track(event["token"], reward=float(event.get("reward", 1.0)))}
    d = flags.client.decide(FLAG, event.get("user"), default="blue")
    return {"variant": d.variant, "value": d.value, "reason": d.reason.value, "token": d.token}
