"""``POST /v1/events``: the SDK's pre-aggregated exposures and rewards, counted once per ``batch_id``."""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditflags_server.api.auth import actor, requires
from banditflags_server.api.context import ctx, read_json
from banditflags_server.api.responses import json_response
from banditflags_server.api.validation import validate_events
from banditflags_server.service import metrics

log = logging.getLogger("banditflags_server.events")


@requires("sdk")
async def post_events(request: Request) -> Response:
    """Validate, then add the batch up and record its id in one transaction; 202 only after the commit."""
    t0 = time.perf_counter()
    body = await read_json(request)
    batch = validate_events(body)
    report = metrics.sdk_report(body)
    c = ctx(request)
    result = await run_in_threadpool(c.store.ingest, batch)
    names = metrics.VARIANT_NAMES
    if not result.duplicate and names.stale(r.flag for r in (*batch.exposures, *batch.rewards)):
        await run_in_threadpool(names.reload, c.store)
    served = c.config_cache[0] if c.config_cache is not None else None  # no extra query per batch
    metrics.record_ingest(batch, result, report, names.names, served, time.perf_counter() - t0)
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
