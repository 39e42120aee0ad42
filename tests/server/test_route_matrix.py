"""Every route the app mounts, against every way of asking: no key, a wrong key, the sdk key, the admin
key, a console session without its CSRF token and with it. A route's expected answers come from what it
declares (an API route's Operation, the console's ``authed``); a route that declares nothing must be in
PUBLIC below, so a new route cannot ship unprotected without someone writing down that it is public.
A refused request must change nothing (the flags and their audit log read the same after it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from banditflags_server.api.operations import ApiRoute
from banditflags_server.app import create_app
from banditflags_server.settings import Settings

#: Routes anyone may call, by design: (method, path) -> why.
PUBLIC = {
    ("GET", "/"): "redirects to the console",
    ("GET", "/console"): "redirects to the console",
    ("GET", "/console/login"): "the login form",
    ("POST", "/console/login"): "signing in (its own one-time form token, the admin key in the form)",
    ("GET", "/console/static"): "the stylesheet and script",
}
MODES = ("none", "wrong", "sdk", "admin", "session", "session+csrf")
FLAG = "matrix"


@dataclass(frozen=True)
class Target:
    """One method on one mounted path, and who may call it."""

    method: str
    path: str  # as mounted (``/v1/flags/{key}``)
    auth: str  # none | sdk | admin | metrics | session | public

    def url(self, flag: str) -> str:
        path = re.sub(r"\{key(:[a-z_]+)?\}", flag, self.path)
        return path + "/console.css" if path.endswith("/static") else path


def targets() -> list[Target]:
    """Every (method, path) of the app, HEAD included, with its declared auth; fails for an undeclared one."""
    out: list[Target] = []
    for route in create_app(Settings(db=":memory:")).routes:
        if isinstance(route, Mount):
            assert ("GET", route.path) in PUBLIC, f"mount {route.path}: declare who may read it"
            out.append(Target("GET", route.path, "public"))
            continue
        assert isinstance(route, Route), route
        for method in sorted(route.methods or ()):
            if isinstance(route, ApiRoute):
                auth = route.op.auth
            else:
                auth = getattr(route.endpoint, "auth_kind", "public")
                base = "GET" if method == "HEAD" else method
                assert auth == "session" or (base, route.path) in PUBLIC, (
                    f"{method} {route.path} checks no key and no session: protect it, or add it to PUBLIC"
                )
            out.append(Target(method, route.path, auth))
    return out


class Caller:
    """Sends one request to a target in one mode, with a body that is valid where one is needed."""

    def __init__(self, server: Any, sid: str, csrf: str) -> None:
        self.server = server
        self.sid = sid
        self.csrf = csrf
        self.n = 0

    def request(self, t: Target, mode: str, flag: str) -> httpx.Response:
        self.n += 1
        headers: dict[str, str] = {}
        cookies: dict[str, str] = {}
        key = {
            "wrong": "bf_admin_wrong_" + "x" * 30,
            "sdk": self.server.sdk_key,
            "admin": self.server.admin_key,
        }
        if mode in key:
            headers["Authorization"] = f"Bearer {key[mode]}"
        if mode.startswith("session"):
            cookies["bf_console"] = self.sid
        kwargs: dict[str, Any] = {}
        if t.path.startswith("/console") and t.method == "POST":
            form = {"state": "frozen", "exploration": "50", "policy_name": "thompson", "reason": "matrix"}
            form |= {"key": f"c{self.n}", "variants": "a\nb"}
            if mode == "session+csrf":
                form["csrf"] = self.csrf
            kwargs["data"] = form
        elif t.method in ("POST", "PATCH") and t.path.startswith("/v1"):
            kwargs["json"] = {
                "/v1/flags": {"key": f"m{self.n}", "variants": ["a", "b"]},
                "/v1/flags/{key}": {"description": f"matrix {self.n}"},
                "/v1/events": {"batch_id": f"matrix-{self.n:04d}", "exposures": []},
            }.get(t.path, {})
        with httpx.Client(base_url=self.server.url, timeout=10, cookies=cookies) as client:
            if t.path == "/v1/stream" and t.method == "GET":
                with client.stream("GET", t.url(flag), headers=headers) as r:
                    return r  # the status is enough: the stream stays open otherwise
            return client.request(t.method, t.url(flag), headers=headers, **kwargs)


def expected(t: Target, mode: str) -> set[int] | str:
    """The statuses a target may answer in a mode, or ``"ok"``: anything but a refusal of the caller."""
    if t.auth in ("none", "metrics", "public"):  # metrics: the server in this test has no metrics key
        if t.path == "/console/login" and t.method == "POST":
            return {403}  # no one-time form token: refused before the key is looked at
        if t.path in ("/", "/console"):
            return {303}
        return {200}
    if t.auth in ("sdk", "admin"):
        if mode in ("none", "session", "session+csrf"):
            return {401}  # the API ignores console cookies
        if mode == "wrong":
            return {401}
        if mode == "sdk" and t.auth == "admin":
            return {403}
        return "ok"
    assert t.auth == "session", t
    if not mode.startswith("session"):
        return {303}  # to the login form, whatever bearer key comes with it: the console takes none
    if t.method == "POST" and mode == "session":
        return {403}  # no CSRF token
    return "ok"


def _state(admin: httpx.Client, flag: str) -> Any:
    """The flags and the target flag's audit log: what a refused request must leave as it was."""
    flags = admin.get("/v1/flags").json()["flags"]
    audit = admin.get(f"/v1/flags/{flag}/audit").json()["entries"]
    return [(f["key"], f["state"], f["description"], f["exploration"], f["policy"]) for f in flags], audit


def sign_in(server: Any) -> tuple[str, str]:
    """A console session: its cookie value and CSRF token."""
    with httpx.Client(base_url=server.url, timeout=10) as c:
        token = re.search(r'name="token" value="([^"]+)"', c.get("/console/login").text)
        assert token is not None
        r = c.post(
            "/console/login", data={"key": server.admin_key, "token": token.group(1), "next": "/console/"}
        )
        assert r.status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/").text)
        assert csrf is not None
        return c.cookies["bf_console"], csrf.group(1)


def test_every_route_is_declared() -> None:
    found = targets()
    assert any(t.auth == "admin" for t in found) and any(t.auth == "session" for t in found)
    declared_public = {(t.method, t.path) for t in found if t.auth == "public"} - {
        ("HEAD", p) for _, p in PUBLIC
    }
    assert declared_public == set(PUBLIC), "PUBLIC names a route the app no longer has"


@pytest.mark.parametrize("mode", MODES)
def test_each_route_answers_each_caller_as_declared(live_server: Callable[..., Any], mode: str) -> None:
    # The wrong-key requests must not be throttled here (tests/server/test_security.py tests that).
    server = live_server(env={"BANDITFLAGS_BAD_KEY_LIMIT": "0"})
    with server.client("admin") as admin:
        caller = Caller(server, *sign_in(server))
        for t in targets():
            flag = f"{FLAG}-{caller.n}"
            assert admin.post("/v1/flags", json={"key": flag, "variants": ["a", "b"]}).status_code == 201
            mutates = t.method not in ("GET", "HEAD")
            before = _state(admin, flag) if mutates else None
            r = caller.request(t, mode, flag)
            want = expected(t, mode)
            where = f"{t.method} {t.path} as {mode}: {r.status_code}"
            if want == "ok":
                assert r.status_code not in (401, 403, 429) and r.status_code < 500, where
                if t.auth == "session":
                    assert "/console/login?next=" not in r.headers.get("location", ""), where
                if t.path == "/console/logout":
                    caller.sid, caller.csrf = sign_in(server)  # it worked: the session is gone
                continue
            assert r.status_code in want, where
            if r.status_code == 303 and t.auth == "session":
                assert r.headers["location"].startswith("/console/login?next="), where
            if mutates:
                assert _state(admin, flag) == before, f"{where} changed something"
    assert "Traceback" not in server.log()
