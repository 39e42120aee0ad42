"""JSON responses: strict, compact bodies, and the HTTP form of an ``ApiError``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from starlette.responses import Response

from banditflags_server.errors import ApiError


def dumps(obj: Any) -> bytes:
    """Compact, strict JSON (no NaN/Infinity) as UTF-8 bytes."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with :func:`dumps`."""
    return Response(dumps(obj), status_code=status, headers=headers, media_type="application/json")


def struct_response(
    obj: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response body of the schemas (:mod:`banditflags_server.api.schemas`), encoded by msgspec: the same
    compact UTF-8 JSON as :func:`dumps`."""
    return Response(
        msgspec.json.encode(obj), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(err: ApiError) -> Response:
    """The HTTP response for an :class:`ApiError`."""
    return json_response(err.body(), status=err.status, headers=err.headers)
