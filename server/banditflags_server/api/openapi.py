"""``GET /openapi.json``: the OpenAPI 3.1 document of the API, built from the routes the app mounts.

Nothing here is written by hand beside the code: each :class:`~banditflags_server.api.operations.
ApiRoute` carries its :class:`~banditflags_server.api.operations.Operation`, and the request and
response bodies are the msgspec Structs that decode the requests (:mod:`~banditflags_server.api.
schemas`) and describe the answers (:mod:`~banditflags_server.api.response_schemas`), turned into JSON
Schema by :func:`msgspec.json.schema_components`. A route under ``/v1`` that is not an ``ApiRoute``
would be missing from the document: tests/server/test_openapi.py fails then.

>>> from banditflags_server.api import config
>>> doc = document(config.routes)
>>> doc["openapi"], sorted(doc["paths"]["/v1/config"]["get"]["responses"])
('3.1.0', ['200', '304', '401', '429'])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from banditflags_server.api.operations import STATUSES, ApiRoute, Auth, Operation, Param, implied_statuses
from banditflags_server.api.responses import dumps
from banditflags_server.api.schemas import ErrorBody

__all__ = ["SECURITY_SCHEMES", "document", "routes"]

REF = "#/components/schemas/{name}"

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "sdk": {"type": "http", "scheme": "bearer", "description": "an sdk key: the config, the stream, events"},
    "admin": {"type": "http", "scheme": "bearer", "description": "an admin key: every operation"},
    "metrics": {
        "type": "http",
        "scheme": "bearer",
        "description": "the metrics key (BANDITFLAGS_METRICS_KEY), when the server has one",
    },
}
#: Who may call an operation, as OpenAPI security requirements (``{}``: no key).
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "sdk": [{"sdk": []}, {"admin": []}],
    "admin": [{"admin": []}],
    "metrics": [{}, {"metrics": []}],
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": ("Bearer", True)},
    429: {"Retry-After": ("seconds until this address may try unknown keys again", True)},
}
_TAGS = [
    {"name": "flags", "description": "Manage flags and their controls (admin keys)"},
    {"name": "sdk", "description": "What the SDKs call (sdk or admin keys)"},
    {"name": "health", "description": "Liveness, readiness, metrics, this document"},
]


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _structs(ops: Iterable[Operation]) -> list[type[msgspec.Struct]]:
    """Every Struct the operations name, once each, in a stable order; the error body first."""
    found: dict[type[msgspec.Struct], None] = {ErrorBody: None}
    for op in ops:
        for tp in (op.body, op.answer, *op.bodies.values()):
            if _is_struct(tp):
                found[tp] = None
    return list(found)


def _schema(tp: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    if tp in refs:
        return dict(refs[tp])
    schema: dict[str, Any] = msgspec.json.schema(tp)
    return schema


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where, "description": p.description}
    out["required"] = p.required
    out["schema"] = msgspec.json.schema(p.schema)
    return out


def _headers(spec: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    return {
        name: {"description": text, "required": required, "schema": {"type": "string"}}
        for name, (text, required) in spec.items()
    }


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in implied_statuses(op):
        resp: dict[str, Any] = {"description": STATUSES[status]}
        if status == op.ok and op.answer is not None:
            resp["content"] = {media: {"schema": _schema(op.answer, refs)} for media in op.media}
        elif status in op.bodies:
            resp["content"] = {"application/json": {"schema": _schema(op.bodies[status], refs)}}
        elif status >= 400:
            resp["content"] = {"application/json": {"schema": _schema(ErrorBody, refs)}}
        headers = {**_ERROR_HEADERS.get(status, {}), **op.headers.get(status, {})}
        if headers:
            resp["headers"] = _headers(headers)
        if status == op.ok and op.links:
            resp["links"] = {
                target: {"operationId": target, "parameters": {"key": "$response.body#/key"}}
                for target in op.links
            }
        out[str(status)] = resp
    return out


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
    }
    if op.params:
        out["parameters"] = [_param(p) for p in op.params]
    if op.body is not None:
        out["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": _schema(op.body, refs)}},
        }
    out["responses"] = _responses(op, refs)
    return out


def document(app_routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of the :class:`ApiRoute` among ``app_routes``, in their order."""
    api = [r for r in app_routes if isinstance(r, ApiRoute)]
    types = _structs(r.op for r in api)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    refs: dict[Any, Any] = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in api:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r.op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "banditflags",
            "version": "v1",
            "description": "Feature flags with an embedded multi-armed bandit: the wire protocol v1 "
            "(docs/protocol.md). Every /v1 operation takes Authorization: Bearer <key>.",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


async def get_openapi(request: Request) -> Response:
    """``GET /openapi.json`` (no key): built on the first call, then served from memory."""
    body: bytes | None = getattr(request.app.state, "openapi", None)
    if body is None:
        body = dumps(document(request.app.routes))
        request.app.state.openapi = body
    return Response(body, media_type="application/json")


routes = [
    ApiRoute(
        "/openapi.json",
        get_openapi,
        "GET",
        Operation("openapi", "This document", "none", "health", answer=dict[str, Any]),
    )
]
