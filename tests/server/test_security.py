"""The security pass (docs/security.md): throttling of repeated unknown keys per client address, the
optional metrics key, console sessions (idle and absolute expiry, ended with their admin key) and the
console's security headers. The route matrix is tests/server/test_route_matrix.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from banditflags_server.api.throttle import KEYS_PER_ADDRESS, BadKeyThrottle
from banditflags_server.console import sessions
from banditflags_server.console.templating import HERE as CONSOLE
from banditflags_server.settings import Settings, SettingsError
from banditflags_server.storage.store import Store


def from_address(server: Any, address: str, key: str | None = None) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server on loopback)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, headers=headers, transport=transport, timeout=10)


def metric(server: Any, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


def test_unknown_keys_are_throttled_per_address_but_known_keys_are_not(server: Any) -> None:
    wrong = "bf_sdk_" + "g" * 32
    with from_address(server, "127.0.0.2", server.sdk_key) as fleet:
        assert fleet.get("/v1/config").status_code == 200  # an SDK fleet behind one address
        for _ in range(20):
            r = fleet.get("/v1/config", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = fleet.get("/v1/config", headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # The key the fleet used keeps working; a key never used from here is refused like a wrong one,
        # so a correct guess from a throttled address tells nothing.
        assert fleet.get("/v1/config").status_code == 200
        assert fleet.post("/v1/events", json={"batch_id": "fleet-0001"}).status_code == 202
        admin_guess = fleet.get("/v1/flags", headers={"Authorization": f"Bearer {server.admin_key}"})
        assert admin_guess.status_code == 429
        login = fleet.get("/console/login")
        token = re.search(r'name="token" value="([^"]+)"', login.text)
        assert token is not None
        page = fleet.post("/console/login", data={"key": server.admin_key, "token": token.group(1)})
        assert page.status_code == 429 and "retry-after" in page.headers and "bf_console" not in fleet.cookies
    with from_address(server, "127.0.0.3", wrong) as other:
        assert other.get("/v1/config").status_code == 401  # another address is not throttled
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}) as admin:
        assert admin.get("/v1/flags").status_code == 200
    assert metric(server, "banditflags_auth_failures_total") == 21
    assert metric(server, "banditflags_auth_throttled_total") == 3


def test_the_throttle_forgets_and_stays_bounded() -> None:
    now = [0.0]
    t = BadKeyThrottle(limit=3, window=60.0, max_addresses=100, clock=lambda: now[0])
    for _ in range(3):
        t.failed("a")
    assert t.retry_after("a", "x") == 60.0
    now[0] = 59.5
    assert t.retry_after("a", "x") == pytest.approx(0.5)
    now[0] = 60.0
    assert t.retry_after("a", "x") is None and "a" not in t.failures  # the window ended: forgotten
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}")
        t.vouch(f"10.0.{i // 256}.{i % 256}", "k")
    assert len(t.failures) == len(t.good) == 100
    for i in range(10):
        t.vouch("nat", f"key{i}")
    assert t.good["nat"] == [f"key{i}" for i in range(10 - KEYS_PER_ADDRESS, 10)]
    off = BadKeyThrottle(limit=0)
    for _ in range(100):
        off.failed("a")
    assert off.retry_after("a", "x") is None


def test_the_metrics_key(live_server: Callable[..., Any]) -> None:
    key = "bf_metrics_" + "m" * 30
    server = live_server(env={"BANDITFLAGS_METRICS_KEY": key})
    url = server.url + "/metrics"
    assert httpx.get(url).status_code == 401 and httpx.get(url).headers["www-authenticate"] == "Bearer"
    for other in ("wrong", server.admin_key, server.sdk_key):  # only the metrics key reads the metrics
        assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and "banditflags_auth_failures_total 3.0" in r.text
    assert key not in server.log()
    with pytest.raises(SettingsError, match="metrics_key") as exc:
        Settings.from_env({"BANDITFLAGS_METRICS_KEY": "has space"})
    assert "has space" not in str(exc.value)
    settings = Settings.from_env({"BANDITFLAGS_METRICS_KEY": key, "BANDITFLAGS_ADMIN_KEY": "bf_admin_secret"})
    assert key not in repr(settings) and "bf_admin_secret" not in repr(settings)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store.open(f"sqlite:///{tmp_path / 'sessions.db'}")
    st.sync_settings_keys(["bf_admin_one", "bf_admin_two"], ["bf_sdk_one"])
    yield st
    st.close()


def test_sessions_expire_when_idle_and_at_the_latest_after_12_hours(store: Store) -> None:
    idle, total = sessions.IDLE_SECONDS, sessions.SESSION_SECONDS
    got = sessions.login(store.engine, "bf_admin_one", now=1000.0)
    assert not isinstance(got, str)
    sid, first = got
    assert first.expires_at == 1000.0 + idle
    assert sessions.lookup(store.engine, sid, now=1000.0 + idle - 1) is not None  # used: the deadline slides
    assert sessions.lookup(store.engine, sid, now=1000.0 + 2 * idle - 2) is not None
    assert sessions.lookup(store.engine, sid, now=1000.0 + 3 * idle) is None  # idle too long
    sid, _ = sessions.login(store.engine, "bf_admin_one", now=0.0)  # type: ignore[misc]
    t = 0.0
    while t + idle / 2 < total:
        t += idle / 2
        live = sessions.lookup(store.engine, sid, now=t)
        assert live is not None and live.expires_at <= total
    assert sessions.lookup(store.engine, sid, now=total + 1) is None  # used all along, but 12 h are up


def test_rotating_one_admin_key_ends_only_its_sessions(live_server: Callable[..., Any]) -> None:
    one, two = "bf_admin_one_" + "a" * 20, "bf_admin_two_" + "b" * 20
    server = live_server(admin_key=f"{one},{two}")
    cookies = {}
    for key in (one, two):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            token = re.search(r'name="token" value="([^"]+)"', c.get("/console/login").text)
            assert token is not None
            assert c.post("/console/login", data={"key": key, "token": token.group(1)}).status_code == 303
            cookies[key] = c.cookies["bf_console"]
    server.admin_key = two  # the operator drops the leaked key and restarts
    server.restart()
    for key, alive in ((one, False), (two, True)):
        r = httpx.get(server.url + "/console/", cookies={"bf_console": cookies[key]}, follow_redirects=False)
        assert (r.status_code == 200) == alive, key


def test_console_security_headers(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as c:
        token = re.search(r'name="token" value="([^"]+)"', c.get("/console/login").text)
        assert token is not None
        c.post("/console/login", data={"key": server.admin_key, "token": token.group(1)})
        c.headers["Authorization"] = f"Bearer {server.admin_key}"
        assert c.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
        del c.headers["Authorization"]
        for path in (
            "/console/",
            "/console/flags/f",
            "/console/new",
            "/console/login",
            "/console/flags/nope",
        ):
            r = c.get(path)
            csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
            assert csp["frame-ancestors"] == "'none'" and csp["script-src"] == "'self'", path
            assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'", path
            assert "unsafe" not in r.headers["content-security-policy"], path
            assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff", path
        assert c.get("/console").headers["cache-control"] == "no-store"  # redirects too
        static = c.get("/console/static/console.js")
        assert static.status_code == 200 and static.headers["x-content-type-options"] == "nosniff"


def test_templates_have_no_inline_script_or_style() -> None:
    """The CSP allows no inline script or style: the templates must not need any."""
    for template in sorted((CONSOLE / "templates").glob("*.html")):
        html = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), template.name
        assert not re.search(r"\son[a-z]+\s*=", html), template.name  # onclick=...
        assert not re.search(r"\sstyle\s*=", html) and "<style" not in html, template.name
        assert "javascript:" not in html, template.name


def test_configured_keys_revoke_the_generated_key_of_their_kind(live_server: Callable[..., Any]) -> None:
    """The first start without keys prints one admin and one sdk key; giving admin keys later revokes the
    printed admin key (it was shown in clear), and an sdk key stays until sdk keys are given."""
    server = live_server(env={"BANDITFLAGS_ADMIN_KEY": "", "BANDITFLAGS_SDK_KEY": ""})
    printed = dict(re.findall(r"(admin|sdk) key:\s+(\S+)", server.log()))
    assert set(printed) == {"admin", "sdk"}

    def status(key: str, path: str) -> int:
        return httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"}).status_code

    assert status(printed["admin"], "/v1/flags") == 200
    server.extra_env = {"BANDITFLAGS_SDK_KEY": ""}  # an admin key is given now, no sdk key
    server.admin_key = "bf_admin_configured_" + "c" * 20
    server.restart()
    assert status(printed["admin"], "/v1/flags") == 401
    assert status(server.admin_key, "/v1/flags") == 200
    assert status(printed["sdk"], "/v1/config") == 200
