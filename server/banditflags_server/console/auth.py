"""Who may use the console: sign-in with an admin key, sign-out, and the ``authed`` decorator that every
page and action goes through.

A session is a cookie (``bf_console``: HttpOnly, SameSite=Strict, path ``/console``) naming a row of
:mod:`banditflags_server.console.sessions`. Without a live session a page redirects to the login form
and nothing changes. Every POST must carry the session's CSRF token (else 403, nothing changes); the
login form carries a one-time token of its own, echoed from the ``bf_login`` cookie (login CSRF).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import keys
from banditflags_server.api.context import ctx
from banditflags_server.console import sessions
from banditflags_server.console.sessions import Session
from banditflags_server.console.templating import PREFIX, error_page, redirect, render
from banditflags_server.errors import ApiError
from banditflags_server.storage.store import hash_key

COOKIE = "bf_console"
LOGIN_COOKIE = "bf_login"
MAX_FORM = 64 * 1024

Handler = Callable[[Request, Session], Awaitable[Response]]


def _set_cookie(request: Request, resp: Response, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the console's forms are all urlencoded); last value wins."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM:
            raise ApiError(413, "the form is too large")
    parsed = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def authed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Pages and actions need a live session: else the login page (nothing changes). Every POST must
    carry the session's CSRF token: else 403 (nothing changes). The POST's form is then in
    ``request.state.form``."""

    async def endpoint(request: Request) -> Response:
        c = ctx(request)
        session = await run_in_threadpool(sessions.lookup, c.store.engine, request.cookies.get(COOKIE))
        if session is None:
            target = request.url.path if request.method == "GET" else PREFIX + "/"
            return redirect(f"{PREFIX}/login?next={quote(target)}")
        if request.method == "POST":
            form = await read_form(request)
            if not session.csrf_ok(form.get("csrf")):
                return error_page(
                    request,
                    403,
                    "This change was refused: the form's security token is missing or out of date. "
                    "Nothing was changed. Reload the page and try again.",
                )
            request.state.form = form
        return await handler(request, session)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    endpoint.auth_kind = "session"  # type: ignore[attr-defined]  # what the route matrix test expects
    return endpoint


def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


async def login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    """The login form; sets a one-time token cookie that the form echoes (login CSRF)."""
    token = sessions.new_token()
    resp = render(
        request,
        "login.html",
        {
            "session": None,
            "token": token,
            "error": error,
            "next": _safe_next(request.query_params.get("next")),
        },
        status,
    )
    _set_cookie(request, resp, LOGIN_COOKIE, token, 3600)
    return resp


async def login_get(request: Request) -> Response:
    """``GET /console/login``."""
    return await login_page(request, error="Signed out." if request.query_params.get("bye") else None)


async def login_post(request: Request) -> Response:
    """``POST /console/login`` with ``key`` (an admin key), ``token``, ``next``."""
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not sessions.Session("", expected, 0.0).csrf_ok(form.get("token")):
        return await login_page(request, error="The login form expired. Please try again.", status=403)
    key = form.get("key", "").strip()
    if not key:
        return await login_page(request, error="Enter an admin key.", status=422)
    # The login form guesses keys as well as the API: the same throttle, by address (api/throttle.py).
    ring, digest = keys(request), hash_key(key)
    try:
        ring.gate(request, digest)
    except ApiError as exc:
        page = await login_page(
            request, error="Too many unknown keys from this address: wait a minute.", status=429
        )
        page.headers.update(exc.headers or {})
        return page
    got = await run_in_threadpool(sessions.login, ctx(request).store.engine, key)
    if got == "unknown":
        ring.refused(request)
        return await login_page(request, error="Unknown key.", status=401)
    ring.accepted(request, digest)
    if got == "not_admin":
        return await login_page(
            request, error="An sdk key cannot sign in: the console needs an admin key.", status=403
        )
    assert not isinstance(got, str)
    sid, _ = got
    resp = redirect(_safe_next(form.get("next")))
    _set_cookie(request, resp, COOKIE, sid, int(sessions.SESSION_SECONDS))
    resp.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return resp


@authed
async def logout(request: Request, session: Session) -> Response:
    """``POST /console/logout``: ends the session everywhere (it is in the database)."""
    await run_in_threadpool(sessions.logout, ctx(request).store.engine, request.cookies.get(COOKIE))
    resp = redirect(f"{PREFIX}/login?bye=1")
    resp.delete_cookie(COOKIE, path=PREFIX)
    return resp
