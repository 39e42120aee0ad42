"""The console's sessions over plain HTTP: cookie attributes, security headers, logout ends the session
on the server, a rotated admin key ends its sessions, a refused CSRF changes nothing."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import httpx


def login(server: Any, key: str) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    page = client.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    resp = client.post("/console/login", data={"key": key, "token": token.group(1), "next": "/console/"})
    return client, resp


def test_login_cookie_headers_and_logout(server: Any) -> None:
    client, resp = login(server, server.admin_key)
    with contextlib.closing(client):
        assert resp.status_code == 303 and resp.headers["location"] == "/console/"
        cookie = next(h for h in resp.headers.get_list("set-cookie") if h.startswith("bf_console="))
        attrs = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {
            "httponly",
            "samesite=strict",
            "path=/console",
        } <= attrs and "secure" not in attrs  # plain http
        page = client.get("/console/")
        assert page.status_code == 200 and "env-admin" in page.text
        assert server.admin_key not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        sid = client.cookies["bf_console"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        # Logout without the token is refused; with it the session ends on the server.
        assert client.post("/console/logout", data={}).status_code == 403
        assert client.post("/console/logout", data={"csrf": csrf.group(1)}).status_code == 303
    replay = httpx.get(server.url + "/console/", cookies={"bf_console": sid}, follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/console/login")


def test_login_needs_the_form_token_and_an_admin_key(server: Any) -> None:
    bare = httpx.post(server.url + "/console/login", data={"key": server.admin_key}, follow_redirects=False)
    assert bare.status_code == 403 and "bf_console" not in bare.headers.get("set-cookie", "")
    for key, status in ((server.sdk_key, 403), ("bf_admin_nope", 401), ("", 422)):
        client, resp = login(server, key)
        with contextlib.closing(client):
            assert resp.status_code == status and "bf_console" not in client.cookies


def test_unauthenticated_pages_and_posts_go_to_login(server: Any, admin: httpx.Client) -> None:
    assert admin.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
    for path in ("/console/", "/console/new", "/console/flags/f"):
        resp = httpx.get(server.url + path, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/console/login?next=")
    resp = httpx.post(server.url + "/console/flags/f/state", data={"state": "killed"}, follow_redirects=False)
    assert resp.status_code == 303 and "/console/login" in resp.headers["location"]
    assert admin.get("/v1/flags/f").json()["state"] == "running"
    assert httpx.get(server.url + "/", follow_redirects=False).headers["location"] == "/console/"
    # The API keeps answering JSON; an unknown console page is an HTML page.
    assert httpx.get(server.url + "/v1/nope").json()["error"]["code"] == "not_found"
    assert "text/html" in httpx.get(server.url + "/console/static/nope.css").headers["content-type"]


def test_a_rotated_admin_key_ends_its_sessions(live_server: Any, tmp_path: Any) -> None:
    server = live_server()
    client, resp = login(server, server.admin_key)
    with contextlib.closing(client):
        assert resp.status_code == 303 and client.get("/console/").status_code == 200
        # Restart with another admin key, as an operator rotating a leaked key would.
        server.admin_key = "bf_admin_rotated_" + "x" * 20
        server.restart()
        again = client.get("/console/")
        assert again.status_code == 303 and "/console/login" in again.headers["location"]
