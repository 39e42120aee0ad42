"""``/healthz`` (liveness) and ``/readyz`` (the database takes writes); no key needed.

``/readyz`` writes: a database that still answers reads but is full or read-only cannot count event
batches, so the server is not ready. The answer is kept for :data:`PROBE_TTL` seconds, so a load
balancer's checks (or many replicas') never add up to a write load.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import ctx
from banditflags_server.api.operations import ApiRoute, Operation
from banditflags_server.api.response_schemas import Alive, Readiness
from banditflags_server.api.responses import json_response
from banditflags_server.storage.outage import OutageLog

log = logging.getLogger("banditflags_server.health")

#: Seconds a readiness answer is reused.
PROBE_TTL = 1.0


class ReadinessProbe:
    """The last write probe's answer and when it was taken; one probe at a time."""

    def __init__(self) -> None:
        self.at = -1e9
        self.revision: int | None = None
        self.lock = asyncio.Lock()
        self.outage = OutageLog("readiness", log)

    async def check(self, request: Request) -> int | None:
        """The revision when the database takes writes, None when it does not."""
        async with self.lock:
            if time.monotonic() - self.at >= PROBE_TTL:
                try:
                    c = ctx(request)
                    # Event batches failing (a full disk, a lost connection): probe the way they write.
                    failing = c.committer is not None and c.committer.outage.down_since is not None
                    self.revision = await run_in_threadpool(c.store.probe_write, failing)
                    self.outage.ok()
                except Exception as exc:  # any database failure means "not ready", never a 500
                    self.revision = None
                    self.outage.failed(exc)
                self.at = time.monotonic()
            return self.revision


async def healthz(request: Request) -> Response:
    """200 while the process serves."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 with the config revision when the database takes writes, 503 otherwise."""
    probe: ReadinessProbe = request.app.state.readiness  # made by create_app
    revision = await probe.check(request)
    if revision is None:
        return json_response({"status": "unavailable"}, status=503)
    return json_response({"status": "ready", "revision": revision})


routes = [
    ApiRoute("/healthz", healthz, "GET", Operation("healthz", "Liveness", "none", "health", answer=Alive)),
    ApiRoute(
        "/readyz",
        readyz,
        "GET",
        Operation(
            "readyz",
            "Readiness: the database takes writes",
            "none",
            "health",
            answer=Readiness,
            bodies={503: Readiness},
        ),
    ),
]
