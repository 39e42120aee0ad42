"""``/v1/segments``: reusable sets of clauses and unit ids that flags' rules name (admin keys; issue 12).

Bodies are :class:`~banditflags_server.api.schemas.SegmentBody` and ``SegmentPatchBody``; a segment's
clauses are checked as a rule's are (:mod:`~banditflags_server.api.targeting`) and may not use
``in_segment``. Every change is audited and bumps the config revision; deleting a segment that flags'
rules name is a 409 listing them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import actor, requires
from banditflags_server.api.context import audit_log, ctx, if_match, iso, read_body
from banditflags_server.api.flags import AUDIT_PAGE, IF_MATCH
from banditflags_server.api.operations import ApiRoute, Operation, Param
from banditflags_server.api.response_schemas import AuditLog, SegmentInUse, SegmentList, SegmentOut
from banditflags_server.api.responses import json_response
from banditflags_server.api.schemas import FLAG_KEY, DeleteBody, SegmentBody, SegmentPatchBody
from banditflags_server.api.targeting import clauses_json
from banditflags_server.api.validation import Problems, convert_body, decode_body, reason_from_json
from banditflags_server.errors import not_found
from banditflags_server.service import segments as actions
from banditflags_server.storage.segments import Segment

__all__ = ["routes", "segment_json", "validate_segment", "validate_segment_patch"]

_NEW = msgspec.json.Decoder(SegmentBody)
_PATCH = msgspec.json.Decoder(SegmentPatchBody)


def segment_json(s: Segment) -> dict[str, Any]:
    """A segment as the API shows it."""
    return {
        **s.config_json(),
        "etag": s.etag,
        "description": s.description,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not FLAG_KEY.fullmatch(key):
        raise not_found(f"segment {key[:80]!r}")
    return key


def _units(body: SegmentBody | SegmentPatchBody, p: Problems) -> None:
    for name in ("included", "excluded"):
        units = getattr(body, name)
        if units is UNSET:
            continue
        seen: set[str] = set()
        for k, unit in enumerate(units):
            if unit in seen:
                p.add(f"{name}[{k}]", f"unit {unit!r:.80} is listed twice")
            seen.add(unit)


def _segment(body: SegmentBody) -> Segment:
    p = Problems()
    clauses = clauses_json(body.clauses, "clauses", p, segments=False)
    _units(body, p)
    p.check()
    return Segment(body.key, body.description, clauses, list(body.included), list(body.excluded))


def _changes(body: SegmentPatchBody) -> dict[str, Any]:
    p = Problems()
    changes: dict[str, Any] = {}
    if body.clauses is not UNSET:
        changes["clauses"] = clauses_json(body.clauses, "clauses", p, segments=False)
    _units(body, p)
    p.check()
    for name in ("included", "excluded", "description"):
        if getattr(body, name) is not UNSET:
            changes[name] = getattr(body, name)
    return changes


def validate_segment(body: Any) -> tuple[Segment, str]:
    """A ``POST /v1/segments`` body given as a dict (the console's): the segment and the reason; the
    422 names every field, as for the API's bytes."""
    checked = convert_body(body, SegmentBody)
    return _segment(checked), checked.reason.strip()


def validate_segment_patch(body: Any) -> tuple[dict[str, Any], str]:
    """A ``PATCH /v1/segments/{key}`` body given as a dict: the changes and the reason."""
    checked = convert_body(body, SegmentPatchBody)
    return _changes(checked), checked.reason.strip()


@requires("admin")
async def create_segment(request: Request) -> Response:
    """``POST /v1/segments`` → 201 with the segment; 409 if the key is taken."""
    c = ctx(request)
    body = decode_body(_NEW, await read_body(request), SegmentBody)
    seg = _segment(body)
    who = await actor(request)
    made = await run_in_threadpool(actions.create_segment, c.store, seg, who, body.reason.strip())
    return json_response(segment_json(made), status=201, headers={"Location": f"/v1/segments/{made.key}"})


@requires("admin")
async def list_segments(request: Request) -> Response:
    """``GET /v1/segments``: every segment, by key."""
    found = await run_in_threadpool(ctx(request).store.list_segments)
    return json_response({"segments": [segment_json(s) for s in found]})


@requires("admin")
async def get_segment(request: Request) -> Response:
    """``GET /v1/segments/{key}``."""
    key = _key(request)
    seg = await run_in_threadpool(ctx(request).store.get_segment, key)
    if seg is None:
        raise not_found(f"segment {key!r}")
    return json_response(segment_json(seg), headers={"ETag": seg.etag})


@requires("admin")
async def patch_segment(request: Request) -> Response:
    """``PATCH /v1/segments/{key}``: the fields given replace the current ones, all checked first; with
    ``If-Match``, a 412 (nothing changed) if the segment changed since that ETag was read."""
    c = ctx(request)
    key = _key(request)
    body = decode_body(_PATCH, await read_body(request), SegmentPatchBody)
    changes = _changes(body)
    who = await actor(request)
    precondition = if_match(request)
    seg = await run_in_threadpool(
        actions.patch_segment, c.store, key, changes, who, body.reason.strip(), precondition
    )
    return json_response(segment_json(seg), headers={"ETag": seg.etag})


@requires("admin")
async def delete_segment(request: Request) -> Response:
    """``DELETE /v1/segments/{key}`` → 204; 409 with ``flags`` if flags' rules name it; with
    ``If-Match``, a 412 (nothing deleted) if the segment changed since that ETag was read."""
    key = _key(request)
    raw = await read_body(request, optional=True)
    reason = reason_from_json(raw) if raw.strip() else ""
    who = await actor(request)
    precondition = if_match(request)
    await run_in_threadpool(actions.delete_segment, ctx(request).store, key, who, reason, precondition)
    return Response(status_code=204)


@requires("admin")
async def segment_audit(request: Request) -> Response:
    """``GET /v1/segments/{key}/audit``: the segment's audit entries (create, update, delete), newest
    first (``?limit=``, ``?before=`` an entry id to page back). Kept after the segment is deleted."""
    return await audit_log(request, _key(request), "segment", ctx(request).store.get_segment)


KEY = Param("key", "path", str, "the segment's key", required=True)
_ETAG_DOC = ("the segment's ETag: changes with every change to it", True)

routes = [
    ApiRoute(
        "/v1/segments",
        list_segments,
        "GET",
        Operation("listSegments", "Every segment", "admin", "segments", answer=SegmentList),
    ),
    ApiRoute(
        "/v1/segments",
        create_segment,
        "POST",
        Operation(
            "createSegment",
            "Create a segment",
            "admin",
            "segments",
            ok=201,
            answer=SegmentOut,
            body=SegmentBody,
            also=(409,),
            headers={201: {"Location": ("the new segment's URL", True)}},
        ),
    ),
    ApiRoute(
        "/v1/segments/{key}",
        get_segment,
        "GET",
        Operation(
            "getSegment",
            "A segment",
            "admin",
            "segments",
            answer=SegmentOut,
            params=(KEY,),
            headers={200: {"ETag": _ETAG_DOC}},
        ),
    ),
    ApiRoute(
        "/v1/segments/{key}",
        patch_segment,
        "PATCH",
        Operation(
            "patchSegment",
            "Change a segment; the fields given replace the current ones",
            "admin",
            "segments",
            answer=SegmentOut,
            body=SegmentPatchBody,
            params=(KEY, IF_MATCH),
            also=(412,),
            headers={200: {"ETag": _ETAG_DOC}},
        ),
    ),
    ApiRoute(
        "/v1/segments/{key}",
        delete_segment,
        "DELETE",
        Operation(
            "deleteSegment",
            "Delete a segment no flag's rules name (409 with the flags that do)",
            "admin",
            "segments",
            ok=204,
            body=DeleteBody,
            body_optional=True,
            params=(KEY, IF_MATCH),
            also=(412,),
            bodies={409: SegmentInUse},
        ),
    ),
    ApiRoute(
        "/v1/segments/{key}/audit",
        segment_audit,
        "GET",
        Operation(
            "segmentAudit",
            "The segment's audit entries, newest first (kept after it is deleted)",
            "admin",
            "segments",
            answer=AuditLog,
            params=(KEY, *AUDIT_PAGE),
        ),
    ),
]
