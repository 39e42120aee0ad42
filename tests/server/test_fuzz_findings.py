"""What the fuzzer (tests/server/test_fuzz.py) and the route matrix found, each pinned over HTTP so it
stays fixed without depending on the fuzzer drawing the same input again (docs/reliability.md lists
them)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

NUL = "\x00"


def test_non_ascii_digits_in_numbers_are_refused_not_a_500(server: Any, admin: httpx.Client) -> None:
    # str.isdigit() takes "²" and "٣"; int() does not: these were 500s.
    assert admin.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
    for params in ({"limit": "²"}, {"before": "٣"}, {"limit": "1" * 400}):
        r = admin.get("/v1/flags/f/audit", params=params)
        assert r.status_code == 422 and r.json()["error"]["field"] in params, (params, r.text)
    headers = {"Authorization": f"Bearer {server.sdk_key}", "Last-Event-ID": b"\xb2"}  # latin-1 "²"
    with httpx.stream("GET", server.url + "/v1/stream", headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        chunks = stream.iter_bytes()
        assert next(chunks).startswith(b"retry:") and next(chunks).startswith(b"event: config")
    assert "Traceback" not in server.log()


def test_a_path_key_that_cannot_be_a_flag_is_404(admin: httpx.Client) -> None:
    # The audit of such a key answered 200 with no entries when ?before= was given.
    for path in ("/v1/flags/NOT%20A%20KEY/audit?before=1", "/v1/flags/Upper", "/v1/flags/-x/history"):
        r = admin.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path


def test_delete_checks_a_query_reason_even_with_a_body(admin: httpx.Client) -> None:
    # A too long ?reason= was ignored when the body had a reason, and the flag was deleted.
    assert admin.post("/v1/flags", json={"key": "keep", "variants": ["a", "b"]}).status_code == 201
    r = admin.request("DELETE", "/v1/flags/keep", params={"reason": "x" * 501}, json={"reason": "ok"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason"
    assert admin.get("/v1/flags/keep").status_code == 200
    r = admin.request("DELETE", "/v1/flags/keep", params={"reason": "query"}, json={"reason": "body"})
    assert r.status_code == 204
    assert admin.get("/v1/flags/keep/audit").json()["entries"][0]["reason"] == "body"


def test_stats_takes_true_or_false(admin: httpx.Client) -> None:
    assert admin.post("/v1/flags", json={"key": "s", "variants": ["a", "b"]}).status_code == 201
    assert "stats" in admin.get("/v1/flags", params={"stats": "true"}).json()["flags"][0]
    assert "stats" not in admin.get("/v1/flags", params={"stats": "false"}).json()["flags"][0]
    r = admin.get("/v1/flags", params={"stats": "maybe"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "stats"


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_nul_characters_are_refused_before_the_database(
    live_server: Callable[..., Any], db: str, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL cannot store NUL in text: a description, reason, sdk name or event row with one was a
    500 there. Now a 422 on both databases, and nothing of the request is stored."""
    server = live_server(db=request.getfixturevalue("pg_url") if db == "postgres" else None)
    flag = {"key": f"nul-{db}", "variants": ["a", {"key": "b", "value": f"v{NUL}"}]}  # JSON escapes it
    with server.client("admin") as admin, server.client("sdk") as sdk:
        assert admin.post("/v1/flags", json=flag).status_code == 201
        key = flag["key"]
        refused = [
            admin.post("/v1/flags", json={"key": f"d-{db}", "variants": ["a"], "description": NUL}),
            admin.post("/v1/flags", json={"key": f"r-{db}", "variants": ["a"], "reason": NUL}),
            admin.patch(f"/v1/flags/{key}", json={"description": f"x{NUL}"}),
            admin.patch(f"/v1/flags/{key}", json={"state": "frozen", "reason": NUL}),
            admin.request("DELETE", f"/v1/flags/{key}", params={"reason": NUL}),
            admin.request("DELETE", f"/v1/flags/{key}", json={"reason": NUL}),
            sdk.post("/v1/events", json={"batch_id": "nul-batch-1", "sdk": NUL}),
            sdk.post(
                "/v1/events",
                json={
                    "batch_id": "nul-batch-2",
                    "exposures": [{"flag": NUL, "version": 1, "arm": 0, "count": 1}],
                },
            ),
        ]
        assert [r.status_code for r in refused] == [422] * len(refused), [r.text for r in refused]
        assert all("NUL" in r.json()["error"]["message"] for r in refused)
        keys = {f["key"] for f in admin.get("/v1/flags").json()["flags"]}  # pg_url is the session's database
        assert key in keys and not {f"d-{db}", f"r-{db}"} & keys
        got = admin.get(f"/v1/flags/{key}").json()
        assert got["state"] == "running" and got["variants"][1]["value"] == f"v{NUL}"
        assert len(admin.get(f"/v1/flags/{key}/audit").json()["entries"]) == 1
        batch = {"batch_id": "nul-batch-1", "exposures": [{"flag": key, "version": 1, "arm": 0, "count": 1}]}
        assert sdk.post("/v1/events", json=batch).json()["duplicate"] is False  # the refused one left no id
    with httpx.Client(base_url=server.url, timeout=10) as console:  # signed in: the page reads the key
        token = re.search(r'name="token" value="([^"]+)"', console.get("/console/login").text)
        assert token is not None
        console.post("/console/login", data={"key": server.admin_key, "token": token.group(1)})
        page = console.get("/console/flags/%00")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Traceback" not in server.log()


def test_the_console_list_takes_any_page_number(server: Any) -> None:
    # Found beside the API's: the flags list read ?page= with isdigit() and int(): "²" and a number of
    # 5,000 digits (beyond int()'s limit) were 500s. Anything that is not a small number is page 1.
    with httpx.Client(base_url=server.url, timeout=10) as c:
        token = re.search(r'name="token" value="([^"]+)"', c.get("/console/login").text)
        assert token is not None
        assert (
            c.post("/console/login", data={"key": server.admin_key, "token": token.group(1)}).status_code
            == 303
        )
        for page in ("²", "9" * 5000, "2"):
            assert c.get("/console/", params={"page": page}).status_code == 200, page
    assert "Traceback" not in server.log()
