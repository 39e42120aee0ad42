"""``GET /v1/config``: every flag as the SDK needs it, with ``ETag: "<revision>"`` and 304.

The serialised body is cached per revision in memory. The revision is read from the database at most
every ``stream_poll`` seconds (0.1 s by default), after every write through this process and, on
PostgreSQL, after every change another replica announces with NOTIFY (then the timed read falls back to
``listen_poll``, 5 s): a poll answers from memory otherwise (no database read, no thread hop), and a
change made through another process or replica is seen as soon as the push stream sees it.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import requires
from banditflags_server.api.context import Context, ctx, iso
from banditflags_server.api.operations import ApiRoute, Operation, Param
from banditflags_server.api.response_schemas import Config
from banditflags_server.api.responses import dumps
from banditflags_server.records import Flag
from banditflags_server.storage.outage import UNAVAILABLE, OutageLog

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
        "targets": flag.targets,
        "rules": flag.rules,
        "rule_allocations": rule_allocations_json(flag),
    }


def rule_allocations_json(flag: Flag) -> dict[str, Any]:
    """The current allocation of each rule whose serve is ``{"bandit": true}`` (docs/protocol.md)."""
    allocs = flag.rule_allocations
    return {
        rule: {
            "version": allocs[rule].version,
            "weights": allocs[rule].weights,
            "table": allocs[rule].table_rle,
        }
        for rule in flag.bandit_rules
        if rule in allocs
    }


def config_bytes(c: Context, writes: int | None = None) -> tuple[int, bytes]:
    """The current revision and its serialised config (built once per revision).

    ``writes``: this process's write count before the call; given, the read refreshes the in-memory gate
    that lets ``GET /v1/config`` skip the database.
    """
    read_at = time.monotonic()
    revision = c.store.revision()
    if writes is not None:
        c.revision_read_at, c.revision_read_writes = read_at, writes
    cached = c.config_cache
    if cached is not None and cached[0] == revision:
        return cached
    with c.lock:  # one build per revision even when many SDKs ask at once
        cached = c.config_cache
        if cached is not None and cached[0] == revision:
            return cached
        snap_rev, flags = c.store.config_snapshot()
        segments = c.store.list_segments()  # read after the revision: at least as new
        body = dumps(
            {
                "schema": CONFIG_SCHEMA,
                "revision": snap_rev,
                "generated_at": iso(time.time()),
                "flags": [config_flag(f) for f in flags if f.allocation is not None],
                "segments": [s.config_json() for s in segments],
            }
        )
        if c.config_cache is None or c.config_cache[0] <= snap_rev:
            c.config_cache = (snap_rev, body)
        return snap_rev, body


def _outage(request: Request) -> OutageLog:
    outage: OutageLog = request.app.state.config_outage  # made by create_app
    return outage


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
    c = ctx(request)
    hub = request.app.state.streams
    writes: int = hub.writes
    cached = c.config_cache
    if (
        cached is not None
        and c.revision_read_writes == writes
        and (c.revision_refreshing or time.monotonic() - c.revision_read_at < hub.poll)
    ):
        # Fresh enough (or being refreshed by another request for the same writes): no database
        # read, no thread hop. A write through this process changes ``writes``, so its own client
        # always gets a read after it.
        revision, body = cached
    else:
        c.revision_refreshing = True
        try:
            revision, body = await run_in_threadpool(config_bytes, c, writes)
            _outage(request).ok()
        except UNAVAILABLE as exc:
            if cached is None:
                raise  # nothing in memory yet: 503 (app's handler), the SDK keeps its own config
            # The database is down, full or unreachable: the last config this process served is the
            # best answer there is (the SDKs keep deciding; stale_after tells them how old it gets).
            _outage(request).failed(exc)
            revision, body = cached
        finally:
            c.revision_refreshing = False
    etag = f'"{revision}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="application/json")


_ETAG = {"ETag": ('the config revision, quoted ("42")', True), "Cache-Control": ("no-cache", True)}

routes = [
    ApiRoute(
        "/v1/config",
        get_config,
        "GET",
        Operation(
            "getConfig",
            "Every flag as the SDK needs it",
            "sdk",
            "sdk",
            answer=Config,
            params=(Param("If-None-Match", "header", str, "an ETag this client has: 304 if it is current"),),
            also=(304,),
            headers={200: _ETAG, 304: _ETAG},
        ),
    )
]
