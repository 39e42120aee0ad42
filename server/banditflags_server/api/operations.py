"""The declarative description of each API route, from which the OpenAPI document is built.

A route module declares its routes as :class:`ApiRoute` (a Starlette ``Route`` for one method) with an
:class:`Operation`: who may call it, its parameters, its request body (a Struct of
:mod:`~banditflags_server.api.schemas`), its answer (a Struct of :mod:`~banditflags_server.api.
response_schemas`) and the statuses it may answer besides the ones its key, body and parameters imply.
:mod:`banditflags_server.api.openapi` turns the app's ``ApiRoute`` list into the document.

The key an operation declares is the one its endpoint enforces: :func:`~banditflags_server.api.auth.
requires` marks the endpoint with its kind, and :class:`ApiRoute` refuses a route whose declaration
and endpoint disagree when the module is imported (the route matrix test then checks the behaviour).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgspec import Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["AUTH_STATUSES", "STATUSES", "ApiRoute", "Auth", "Operation", "Param", "implied_statuses"]

#: ``none``: no key; ``sdk``: an sdk or admin key; ``admin``: an admin key; ``metrics``: the metrics key
#: when the server has one (``BANDITFLAGS_METRICS_KEY``), else none.
Auth = Literal["none", "sdk", "admin", "metrics"]

#: What each status means, for every operation that may answer it.
STATUSES: dict[int, str] = {
    200: "OK",
    201: "Created",
    202: "Accepted: durably committed",
    204: "No content",
    304: "Not modified: the If-None-Match ETag is the current one",
    400: "The body is not valid JSON (invalid_json)",
    401: "Missing or unknown key (unauthorized)",
    403: "This key may not call this operation (forbidden)",
    404: "No such flag (not_found)",
    409: "Conflict with the flag's state or a concurrent change (conflict)",
    412: "The If-Match ETag is no longer the resource's: it changed since it was read; nothing was changed",
    413: "The body is too large (payload_too_large)",
    415: "The body is not JSON (unsupported_media_type)",
    422: "A field or parameter is invalid (invalid_field); each bad field is named",
    429: "Too many unknown keys from this address (too_many_requests); retry after Retry-After seconds",
    503: "Unavailable (unavailable)",
}

AUTH_STATUSES: dict[str, tuple[int, ...]] = {
    "none": (),
    "sdk": (401, 429),
    "admin": (401, 403, 429),
    "metrics": (401, 429),
}


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter; ``schema`` is a type msgspec turns into JSON Schema."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Any
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """What the document says of one method on one path."""

    id: str
    summary: str
    auth: Auth
    tag: str
    #: The success status and its body: a Struct type (JSON), ``str`` (text in ``media``) or None.
    ok: int = 200
    answer: Any = None
    media: tuple[str, ...] = ("application/json",)
    #: The request body (JSON) and whether it may be left out.
    body: type[Struct] | None = None
    body_optional: bool = False
    params: tuple[Param, ...] = ()
    #: Statuses besides the success, the key's, the body's and the parameters' (see implied_statuses).
    also: tuple[int, ...] = ()
    #: Bodies of statuses other than the success that are not the error body (``/readyz``'s 503).
    bodies: Mapping[int, type[Struct]] = field(default_factory=dict)
    #: Response headers by status: name -> (description, always sent).
    headers: Mapping[int, Mapping[str, tuple[str, bool]]] = field(default_factory=dict)
    #: Operations that take the answer's ``key`` as their ``key`` parameter (OpenAPI links).
    links: tuple[str, ...] = ()


def implied_statuses(op: Operation) -> list[int]:
    """Every status ``op`` may answer, in order: the success, those its key, body and parameters imply
    (a path ``key`` may name no flag; a query parameter may be invalid), and its own."""
    out = {op.ok, *AUTH_STATUSES[op.auth], *op.also, *op.bodies}
    if op.body is not None:
        out |= {400, 413, 415, 422}
    if any(p.where == "path" for p in op.params):
        out.add(404)
    if any(p.where == "query" for p in op.params):
        out.add(422)
    return sorted(out)


Endpoint = Callable[[Request], Awaitable[Response]]


class ApiRoute(Route):
    """A route for one method with its :class:`Operation`; the endpoint must enforce the declared key."""

    def __init__(self, path: str, endpoint: Endpoint, method: str, op: Operation) -> None:
        enforced = getattr(endpoint, "auth_kind", "none")
        if enforced != op.auth:
            raise TypeError(f"{method} {path}: declared key {op.auth!r}, the endpoint enforces {enforced!r}")
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.op = op
