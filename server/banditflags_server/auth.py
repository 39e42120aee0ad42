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
    """sha256 -> kind, cached; falls back to the store for hashes it has not seen. The key's name
    (for the audit log) is looked up once per key and cached too."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.known: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def load(self) -> None:
        """Read every stored key hash (blocking)."""
        self.known = self.store.all_keys()

    async def name(self, digest: str) -> str:
        """The stored name of a known key (``env-admin``, ``admin-initial``, ...); never the key."""
        name = self.names.get(digest)
        if name is None:
            found = await run_in_threadpool(self.store.key_identity, digest)
            name = found[1] if found is not None else "unknown"
            self.names[digest] = name
        return name

    async def kind(self, request: Request) -> str:
        """The kind of the request's key; 401 if missing or unknown. Sets ``request.state.key_hash``."""
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
        request.state.key_hash = digest
        return kind


async def actor(request: Request) -> str:
    """The name of the key that authorised ``request`` (after :func:`requires` let it through)."""
    digest: str | None = getattr(request.state, "key_hash", None)
    if digest is None:
        return "unknown"
    ring: KeyRing = request.app.state.keys
    return await ring.name(digest)


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
