"""Web apps: a sticky unit id per visitor (cookie or header) for WSGI and ASGI, and async helpers.

No web framework is imported: :class:`UnitIdMiddleware` wraps any WSGI app (Flask, Django,
Pyramid, ...) and :class:`ASGIUnitIdMiddleware` any ASGI app (FastAPI, Starlette, Django's ASGI).
For each HTTP request they find the unit id, in this order:

1. the request header ``X-Unit-Id`` (API clients, mobile apps: they keep their own id);
2. the cookie ``bf_uid`` (browsers);
3. otherwise a new random id, sent back in a ``Set-Cookie`` so the next request keeps it.

The view reads it with :func:`current_unit_id` (a context variable, so it works in threads, in
``async def`` views and in FastAPI's threadpool), or from the WSGI environ / ASGI scope key
``"banditflags.unit_id"``. Ids are at most 128 printable ASCII characters without spaces, ``;`` or
``,``; anything else is replaced by a new id, so a client cannot stuff arbitrary data into the SDK.

In async apps, ``variant()``/``decide()``/``track()`` never wait on I/O and are safe on the event
loop; the calls that do wait (``wait_until_ready``, ``flush``, ``close``) have awaitable forms here
that run them in a worker thread: :func:`await_ready`, :func:`aflush`, :func:`aclose`.

>>> def app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [current_unit_id().encode()]
>>> wrapped = UnitIdMiddleware(app, new_id=lambda: "fresh-id")
>>> seen = []
>>> body = wrapped({"HTTP_COOKIE": "theme=dark; bf_uid=u-123"}, lambda s, h: seen.append(h))
>>> body, seen[-1]
([b'u-123'], [('Content-Type', 'text/plain')])
>>> body = wrapped({}, lambda s, h: seen.append(h))
>>> body, seen[-1][-1][0], seen[-1][-1][1].split(";")[0]
([b'fresh-id'], 'Set-Cookie', 'bf_uid=fresh-id')
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._client import Client

__all__ = [
    "COOKIE_NAME",
    "ENVIRON_KEY",
    "HEADER_NAME",
    "ASGIUnitIdMiddleware",
    "UnitIdMiddleware",
    "aclose",
    "aflush",
    "await_ready",
    "current_unit_id",
    "unit_id_from",
]

COOKIE_NAME = "bf_uid"
HEADER_NAME = "X-Unit-Id"
ENVIRON_KEY = "banditflags.unit_id"
ONE_YEAR = 365 * 24 * 3600

_VALID_ID = re.compile(r"[!#-+\--:<-~]{1,128}\Z")  # printable ASCII minus space, '"', ',', ';'
_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("banditflags_unit_id", default=None)


def current_unit_id() -> str | None:
    """The unit id of the request being handled (set by the middleware), or None outside one."""
    return _CURRENT.get()


def _new_id() -> str:
    return uuid.uuid4().hex


def _valid(value: str | None) -> str | None:
    return value if value is not None and _VALID_ID.match(value) else None


def _cookie_value(cookie_header: str, name: str) -> str | None:
    for part in cookie_header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip().strip('"')
    return None


def unit_id_from(
    header_value: str | None, cookie_header: str | None, cookie_name: str = COOKIE_NAME
) -> str | None:
    """The unit id a request carries (header first, then cookie), or None if it has no valid one.

    >>> unit_id_from("api-7", "bf_uid=u-1"), unit_id_from(None, "bf_uid=u-1"), unit_id_from("bad id", None)
    ('api-7', 'u-1', None)
    """
    uid = _valid(header_value.strip()) if header_value else None
    if uid is None and cookie_header:
        uid = _valid(_cookie_value(cookie_header, cookie_name))
    return uid


class _Settings:
    def __init__(
        self,
        cookie_name: str,
        header_name: str,
        max_age: int,
        secure: bool,
        samesite: str,
        path: str,
        new_id: Callable[[], str],
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", cookie_name):
            raise ValueError("cookie_name must be 1-64 of A-Z a-z 0-9 _ . -")
        if samesite not in ("Lax", "Strict", "None"):
            raise ValueError("samesite must be 'Lax', 'Strict' or 'None'")
        self.cookie_name = cookie_name
        self.header_name = header_name
        self.environ_header = "HTTP_" + header_name.upper().replace("-", "_")
        self.asgi_header = header_name.lower().encode("latin-1")
        self.new_id = new_id
        attrs = [f"Max-Age={int(max_age)}", f"Path={path}", "HttpOnly", f"SameSite={samesite}"]
        if secure or samesite == "None":
            attrs.append("Secure")
        self.cookie_attrs = "; ".join(attrs)

    def set_cookie(self, uid: str) -> str:
        return f"{self.cookie_name}={uid}; {self.cookie_attrs}"


class UnitIdMiddleware:
    """WSGI middleware: a sticky unit id per visitor (see the module docstring).

    ``UnitIdMiddleware(app, cookie_name="bf_uid", header_name="X-Unit-Id", max_age=ONE_YEAR,
    secure=False, samesite="Lax", path="/", new_id=uuid4().hex)``; with Flask:
    ``app.wsgi_app = UnitIdMiddleware(app.wsgi_app)``.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        *,
        cookie_name: str = COOKIE_NAME,
        header_name: str = HEADER_NAME,
        max_age: int = ONE_YEAR,
        secure: bool = False,
        samesite: str = "Lax",
        path: str = "/",
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.app = app
        self._s = _Settings(cookie_name, header_name, max_age, secure, samesite, path, new_id)

    def __call__(
        self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        s = self._s
        uid = unit_id_from(environ.get(s.environ_header), environ.get("HTTP_COOKIE"), s.cookie_name)
        respond = start_response
        if uid is None:
            uid = s.new_id()
            cookie = s.set_cookie(uid)

            def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                headers.append(("Set-Cookie", cookie))
                if exc_info:
                    return start_response(status, headers, exc_info)
                return start_response(status, headers)

        environ[ENVIRON_KEY] = uid
        token = _CURRENT.set(uid)
        try:
            return self.app(environ, respond)
        finally:
            _CURRENT.reset(token)


Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class ASGIUnitIdMiddleware:
    """ASGI middleware: a sticky unit id per visitor (see the module docstring). No I/O of its own.

    FastAPI / Starlette: ``app.add_middleware(ASGIUnitIdMiddleware)`` (same options as
    :class:`UnitIdMiddleware`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cookie_name: str = COOKIE_NAME,
        header_name: str = HEADER_NAME,
        max_age: int = ONE_YEAR,
        secure: bool = False,
        samesite: str = "Lax",
        path: str = "/",
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.app = app
        self._s = _Settings(cookie_name, header_name, max_age, secure, samesite, path, new_id)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        s = self._s
        header: str | None = None
        cookie: str | None = None
        for k, v in scope.get("headers", ()):
            if k == s.asgi_header:
                header = v.decode("latin-1")
            elif k == b"cookie":
                cookie = v.decode("latin-1") if cookie is None else cookie + "; " + v.decode("latin-1")
        uid = unit_id_from(header, cookie, s.cookie_name)
        wrapped_send = send
        if uid is None:
            uid = s.new_id()
            set_cookie = (b"set-cookie", s.set_cookie(uid).encode("latin-1"))

            async def wrapped_send(message: Any) -> None:
                if message.get("type") == "http.response.start":
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), set_cookie]
                await send(message)

        scope[ENVIRON_KEY] = uid
        token = _CURRENT.set(uid)
        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            _CURRENT.reset(token)


async def await_ready(client: Client, timeout: float = 0.5) -> bool:
    """``client.wait_until_ready(timeout)`` without blocking the event loop (e.g. in a lifespan)."""
    return await asyncio.to_thread(client.wait_until_ready, timeout)


async def aflush(client: Client, timeout: float = 5.0) -> bool:
    """``client.flush(timeout)`` without blocking the event loop."""
    return await asyncio.to_thread(client.flush, timeout)


async def aclose(client: Client, timeout: float = 5.0) -> bool:
    """``client.close(timeout)`` without blocking the event loop (e.g. at the end of a lifespan)."""
    return await asyncio.to_thread(client.close, timeout)
