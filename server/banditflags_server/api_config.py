"""``GET /v1/config``: every flag as the SDK needs it, with ``ETag: "<revision>"`` and 304.

The serialised body is cached per revision in memory; the revision itself is read from the database on
every request, so a change made through another process or replica is seen at once.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditflags_server.api_common import Context, ctx, iso
from banditflags_server.auth import requires
from banditflags_server.errors import dumps
from banditflags_server.store import Flag

CONFIG_SCHEMA = 1


def config_flag(flag: Flag) -> dict[str, Any]:
    """One flag of the config payload (docs/protocol.md "Config")."""
    a = flag.allocation
    assert a is not None
    return {
        "key": flag.key,
        "salt": flag.salt,
        "state": flag.state,
        "exploration": flag.exploration,
        "version": flag.version,
        "variants": flag.variants,
        "control": flag.variants[flag.control]["key"],
        "weights": a.weights,
        "table": a.table_rle,
        "objective": flag.objective,
        "policy": flag.policy.get("name", "thompson"),
    }


def config_bytes(c: Context) -> tuple[int, bytes]:
    """The current revision and its serialised config (built once per revision)."""
    revision = c.store.revision()
    cached = c.config_cache
    if cached is not None and cached[0] == revision:
        return cached
    with c.lock:  # one build per revision even when many SDKs ask at once
        cached = c.config_cache
        if cached is not None and cached[0] == revision:
            return cached
        snap_rev, flags = c.store.config_snapshot()
        body = dumps(
            {
                "schema": CONFIG_SCHEMA,
                "revision": snap_rev,
                "generated_at": iso(time.time()),
                "flags": [config_flag(f) for f in flags if f.allocation is not None],
            }
        )
        if c.config_cache is None or c.config_cache[0] <= snap_rev:
            c.config_cache = (snap_rev, body)
        return snap_rev, body


def _matches(header: str, etag: str) -> bool:
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag in ("*", etag):
            return True
    return False


@requires("sdk")
async def get_config(request: Request) -> Response:
    """``GET /v1/config`` → 200 with the config, or 304 when ``If-None-Match`` has the current ETag."""
    revision, body = await run_in_threadpool(config_bytes, ctx(request))
    etag = f'"{revision}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="application/json")


routes = [Route("/v1/config", get_config, methods=["GET"])]
