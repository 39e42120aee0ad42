"""``GET /metrics``: the Prometheus exposition of :mod:`banditflags_server.service.metrics`.

No key unless the server has a metrics key (``BANDITFLAGS_METRICS_KEY``): the page names every flag and
variant, so a server reachable from outside its network should ask for one.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import check_metrics_key
from banditflags_server.api.operations import ApiRoute, Operation
from banditflags_server.service.metrics import render
from banditflags_server.settings import Settings


async def get_metrics(request: Request) -> Response:
    """``GET /metrics``: the exposition in the format the scraper's ``Accept`` asks for (Prometheus text
    0.0.4 by default, OpenMetrics on request); the metrics key as a bearer key when the server has one."""
    settings: Settings = request.app.state.settings
    if settings.metrics_key is not None:
        check_metrics_key(request, settings.metrics_key)
    ctx = getattr(request.app.state, "ctx", None)
    store = ctx.store if ctx is not None else None
    body, content_type = await run_in_threadpool(render, store, request.headers.get("accept", ""))
    return Response(body, media_type=None, headers={"Content-Type": content_type})


get_metrics.auth_kind = "metrics"  # type: ignore[attr-defined]

routes = [
    ApiRoute(
        "/metrics",
        get_metrics,
        "GET",
        Operation(
            "metrics",
            "Prometheus metrics (docs/telemetry.md); the metrics key when the server has one",
            "metrics",
            "health",
            answer=str,
            media=("text/plain", "application/openmetrics-text"),
        ),
    )
]
