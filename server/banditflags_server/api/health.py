"""``/healthz`` (liveness) and ``/readyz`` (the database answers); no key needed."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import ctx
from banditflags_server.api.operations import ApiRoute, Operation
from banditflags_server.api.response_schemas import Alive, Readiness
from banditflags_server.api.responses import json_response

log = logging.getLogger("banditflags_server.health")


async def healthz(request: Request) -> Response:
    """200 while the process serves."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 with the config revision when the database answers, 503 otherwise."""
    try:
        revision = await run_in_threadpool(ctx(request).store.ping)
    except Exception as exc:  # any database failure means "not ready", never a 500
        log.warning("readiness check failed: %s", type(exc).__name__)
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
            "Readiness: the database answers",
            "none",
            "health",
            answer=Readiness,
            bodies={503: Readiness},
        ),
    ),
]
