"""``POST /v1/events``: the SDK's pre-aggregated exposures and rewards, counted once per ``batch_id``."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditflags_server.api_common import ctx, read_json
from banditflags_server.auth import actor, requires
from banditflags_server.errors import json_response
from banditflags_server.validation import validate_events

log = logging.getLogger("banditflags_server.events")


@requires("sdk")
async def post_events(request: Request) -> Response:
    """Validate, then add the batch up and record its id in one transaction; 202 only after the commit."""
    batch = validate_events(await read_json(request))
    result = await run_in_threadpool(ctx(request).store.ingest, batch)
    request.app.state.reports.note(await actor(request), batch.sdk)  # "when SDKs last reported"
    if batch.dropped and not result.duplicate:
        log.info("an SDK (%s) reports %d dropped events", batch.sdk[:60] or "unknown", batch.dropped)
    return json_response(
        {
            "batch_id": result.batch_id,
            "duplicate": result.duplicate,
            "exposures": result.exposures,
            "rewards": result.rewards,
            "ignored": result.ignored,
        },
        status=202,
    )


routes = [Route("/v1/events", post_events, methods=["POST"])]
