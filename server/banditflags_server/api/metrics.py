"""``GET /metrics``: the Prometheus exposition of :mod:`banditflags_server.service.metrics`; no key."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditflags_server.service.metrics import render


async def get_metrics(request: Request) -> Response:
    """``GET /metrics``: the exposition in the format the scraper's ``Accept`` asks for (Prometheus text
    0.0.4 by default, OpenMetrics on request); no key (put it behind the network boundary)."""
    ctx = getattr(request.app.state, "ctx", None)
    store = ctx.store if ctx is not None else None
    body, content_type = await run_in_threadpool(render, store, request.headers.get("accept", ""))
    return Response(body, media_type=None, headers={"Content-Type": content_type})


routes = [Route("/metrics", get_metrics, methods=["GET"])]
