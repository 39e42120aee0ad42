"""Bearer-key authentication: ``admin`` keys may do everything, ``sdk`` keys only config and events.

Keys are compared by their sha256 (the store keeps nothing else); a key never reaches a log line or a
response. Known hashes are cached in memory; an unknown one is looked up in the database, so keys added by
another process are honoured.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.errors import ApiError
from banditflags_server.store import Store, hash_key

Endpoint = Callable[[Request], Awaitable[Response]]


class KeyRing:
    """sha256 -> kind, cached; falls back to the store for hashes it has not seen."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.known: dict[str, str] = {}

    def load(self) -> None:
        """Read every stored key hash (blocking)."""
        self.known = self.store.all_keys()

    async def kind(self, request: Request) -> str:
        """The kind of the request's key; 401 if missing or unknown."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "missing bearer key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(key)
        kind = self.known.get(digest)
        if kind is None:
            kind = await run_in_threadpool(self.store.key_kind, digest)
            if kind is None:
                raise ApiError(401, "unknown key", headers={"WWW-Authenticate": "Bearer"})
            self.known[digest] = kind
        return kind


def requires(kind: str) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: ``admin`` needs an admin key, ``sdk`` accepts an sdk or admin key."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            ring: KeyRing = request.app.state.keys
            got = await ring.kind(request)
            if kind == "admin" and got != "admin":
                raise ApiError(403, "this key may not call this endpoint (an admin key is needed)")
            return await endpoint(request)

        return guarded

    return wrap
