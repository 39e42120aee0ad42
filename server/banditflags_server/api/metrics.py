"""``GET /metrics``: the Prometheus exposition of :mod:`banditflags_server.service.metrics`; no key."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditflags_server.service.metrics import CONTENT_TYPE, render


async def get_metrics(request: Request) -> Response:
    """``GET /metrics``: the text exposition; no key (put it behind the network boundary)."""
    ctx = getattr(request.app.state, "ctx", None)
    body = await run_in_threadpool(render, ctx.store if ctx is not None else None)
    return Response(body, media_type=None, headers={"Content-Type": CONTENT_TYPE})


routes = [Route("/metrics", get_metrics, methods=["GET"])]
