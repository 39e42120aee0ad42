"""``POST /v1/events``: the SDK's pre-aggregated exposures and rewards, counted once per ``batch_id``."""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import actor, requires
from banditflags_server.api.context import ctx, read_body
from banditflags_server.api.operations import ApiRoute, Operation
from banditflags_server.api.responses import struct_response
from banditflags_server.api.schemas import EventsAccepted, EventsBody, Ignored
from banditflags_server.api.validation import events_from_json
from banditflags_server.errors import ApiError
from banditflags_server.service import metrics
from banditflags_server.storage.group_commit import CommitFailed, Overloaded

log = logging.getLogger("banditflags_server.events")


@requires("sdk")
async def post_events(request: Request) -> Response:
    """Validate, then add the batch up and record its id in a group commit; 202 only after the commit."""
    t0 = time.perf_counter()
    batch, report = events_from_json(await read_body(request))  # report: config_revision and config_age
    c = ctx(request)
    try:
        # Group commit: written with whatever else is queued, answered after that one commit.
        result = await c.ingest().ingest(batch)
    except (CommitFailed, Overloaded) as exc:
        raise ApiError(
            503, f"the batch was not counted ({exc}); retry it", headers={"Retry-After": "1"}
        ) from None
    names = metrics.VARIANT_NAMES
    if not result.duplicate and names.stale(r.flag for r in (*batch.exposures, *batch.rewards)):
        await run_in_threadpool(names.reload, c.store)
    served = c.config_cache[0] if c.config_cache is not None else None  # no extra query per batch
    metrics.record_ingest(batch, result, report, names.names, served, time.perf_counter() - t0)
    request.app.state.reports.note(await actor(request), batch.sdk)  # "when SDKs last reported"
    if batch.dropped and not result.duplicate:
        log.info("an SDK (%s) reports %d dropped events", batch.sdk[:60] or "unknown", batch.dropped)
    ignored = [Ignored(i["field"], i["reason"]) for i in result.ignored]
    answer = EventsAccepted(
        result.batch_id, result.duplicate, result.exposures, result.rewards, ignored, result.duplicates
    )
    return struct_response(answer, status=202)


_OP = Operation(
    "postEvents",
    "Pre-aggregated counts, once per batch_id",
    "sdk",
    "sdk",
    ok=202,
    answer=EventsAccepted,
    body=EventsBody,
    also=(503,),  # the group's commit failed or the writer is overloaded: nothing counted, retry
    headers={503: {"Retry-After": ("seconds to wait before retrying the batch", True)}},
)
routes = [ApiRoute("/v1/events", post_events, "POST", _OP)]
