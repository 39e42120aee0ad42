"""The function the simulated Lambda runtime serves in the tests (loaded from its file path)."""

from __future__ import annotations

import os
from typing import Any

from banditflags.serverless import Serverless

flags = Serverless(
    ttl=float(os.environ.get("FN_TTL", "600")),
    retry_after=float(os.environ.get("FN_RETRY_AFTER", "5")),
    margin=float(os.environ.get("FN_MARGIN", "0.25")),
    flush_timeout=float(os.environ.get("FN_FLUSH_TIMEOUT", "2")),
    refresh_timeout=0.5,
)


@flags.lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    client = flags.client
    decisions = [client.decide("checkout-button", u, default="blue") for u in event.get("users", [])]
    credited = [client.track(t) for t in event.get("tokens", [])]
    if event.get("fail"):
        raise RuntimeError("the handler failed after deciding")
    return {
        "decisions": [
            {"variant": d.variant, "reason": d.reason.value, "version": d.version, "token": d.token}
            for d in decisions
        ],
        "credited": credited,
        "previous_flush_ok": flags.last_flush_ok,
        "refreshes": flags.refreshes,
        "pending_batches": client.stats().pending_batches,
    }
