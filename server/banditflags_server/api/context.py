"""Helpers shared by the route modules: the app context, capped JSON bodies, timestamps."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.responses import json_response
from banditflags_server.api.schemas import FLAG_KEY
from banditflags_server.errors import ApiError, ValidationError, not_found
from banditflags_server.service import metrics
from banditflags_server.settings import Settings
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage.group_commit import GroupCommitter
from banditflags_server.storage.store import Store


@dataclass
class Context:
    """What handlers need; lives on ``app.state.ctx``."""

    settings: Settings
    store: Store
    config_cache: tuple[int, bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When this process last read the revision (monotonic, taken before the read) and how many of its
    #: own writes it had counted then: ``/v1/config`` answers from memory while both are fresh.
    revision_read_at: float = -math.inf
    revision_read_writes: int = -1
    #: A request is reading the revision for the current write count: the others answer from memory
    #: meanwhile instead of all hopping to threads for the same read (a herd at every poll interval).
    revision_refreshing: bool = False
    #: The writer of event batches (group commit); made lazily so tests may build a bare Context.
    committer: GroupCommitter | None = None

    def ingest(self) -> GroupCommitter:
        """The process's event-batch writer."""
        if self.committer is None:
            self.committer = GroupCommitter(self.store.engine, on_group=metrics.record_group)
        return self.committer

    def rng(self) -> np.random.Generator:
        """A fresh generator per call: numpy generators are not thread-safe."""
        return np.random.default_rng()


def ctx(request: Request) -> Context:
    """The app context of a request."""
    c: Context = request.app.state.ctx
    return c


def iso(ts: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (``2026-11-27T23:10:00Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, *, optional: bool = False) -> bytes:
    """The request's JSON body as bytes, for a schema's decoder (:mod:`banditflags_server.api.validation`):
    415 unless JSON, 413 past the size cap (counted while reading). An ``optional`` body (``DELETE``'s)
    may come without a Content-Type, as it always could."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type) and not (optional and not content_type):
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    cap = ctx(request).settings.max_body
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > cap):
        raise ApiError(413, f"the body must be at most {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    # Count what actually arrives: Content-Length may be absent (chunked) or wrong.
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"the body must be at most {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def flag_key(request: Request) -> str:
    """The ``{key}`` path parameter; 404 if it cannot be a flag's key (as the document says)."""
    key: str = request.path_params["key"]
    if not FLAG_KEY.fullmatch(key):
        raise not_found(f"flag {key[:80]!r}")
    return key


def if_match(request: Request) -> str | None:
    """The ``If-Match`` header of a write (None: none sent, no precondition); an empty one is a 422."""
    value = request.headers.get("if-match")
    if value is not None and not value.strip():
        raise ValidationError([("If-Match", "must be an ETag, a comma-separated list of them, or *")])
    return value


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in ``low..high`` (absent: ``default``); 422 naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit() also takes digits int() refuses ("²"); the length bounds int()'s work.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise ValidationError([(name, f"must be an integer in {low}..{high}")])
    return int(raw)


async def audit_log(request: Request, key: str, kind: str, find: Callable[[str], object | None]) -> Response:
    """The answer of an audit route (a flag's or a segment's: ``kind``): the entries of ``key``, newest
    first, paged by ``?limit=`` (1..1000, default 100) and ``?before=`` an entry id. 404 only when
    there is neither an entry nor the thing itself (``find``): the log outlives a delete."""
    limit = int_param(request, "limit", 100, 1, 1000)
    before = request.query_params.get("before")
    before_id = int_param(request, "before", 0, 1, 2**62) if before is not None else None
    engine = ctx(request).store.engine

    def work() -> dict[str, Any]:
        found = audit_mod.entries(engine, key, limit=limit, before_id=before_id, kind=kind)
        if not found and before_id is None and find(key) is None:
            raise not_found(f"{kind} {key!r}")
        return {"key": key, "entries": [e.to_json(iso) for e in found]}

    return json_response(await run_in_threadpool(work))
