"""The OpenAPI document (``GET /openapi.json``): built from the mounted routes, valid OpenAPI 3.1, complete
(no ``/v1`` route missing), and true: real answers decode as the response schemas it is made of."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import schemathesis
from starlette.routing import Route

from banditflags_server.api import response_schemas as out
from banditflags_server.api.openapi import document
from banditflags_server.api.operations import ApiRoute, implied_statuses
from banditflags_server.api.schemas import ErrorBody, EventsAccepted
from banditflags_server.app import create_app
from banditflags_server.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _app_routes() -> list[Any]:
    return list(create_app(Settings(db=":memory:")).routes)


def test_every_api_route_is_in_the_document_and_nothing_else() -> None:
    routes = _app_routes()
    doc = document(routes)
    in_doc = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    mounted = {(r.path, m) for r in routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    api = {(path, m) for path, m in mounted if path.startswith("/v1")}
    assert api <= in_doc, f"routes under /v1 without an Operation (make them ApiRoute): {api - in_doc}"
    assert in_doc <= mounted
    assert {("/healthz", "GET"), ("/readyz", "GET"), ("/metrics", "GET"), ("/openapi.json", "GET")} <= in_doc
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(in_doc)
    for r in routes:
        if isinstance(r, ApiRoute):
            assert sorted(
                int(s) for s in doc["paths"][r.path][r.method.lower()]["responses"]
            ) == implied_statuses(r.op)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document(_app_routes())
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # against the OpenAPI 3.1 schema schemathesis carries
    ops = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    for ops_of_path in doc["paths"].values():
        for op in ops_of_path.values():
            for resp in op["responses"].values():
                for link in resp.get("links", {}).values():
                    assert link["operationId"] in ops
            keyed = op["security"] != []
            assert ("401" in op["responses"]) == keyed and ("429" in op["responses"]) == keyed
    by_id = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    assert by_id["listFlags"]["security"] == [{"admin": []}]
    assert by_id["getConfig"]["security"] == [{"sdk": []}, {"admin": []}]
    assert by_id["metrics"]["security"] == [{}, {"metrics": []}]
    assert "403" in by_id["createFlag"]["responses"] and "403" not in by_id["postEvents"]["responses"]
    assert by_id["createFlag"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewFlagBody"
    }


def test_the_server_serves_it_and_the_protocol_page_links_it(server: Any) -> None:
    r = httpx.get(server.url + "/openapi.json", timeout=10)  # no key
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == json.loads(json.dumps(document(_app_routes())))
    assert "/openapi.json" in (DOCS / "protocol.md").read_text()


def _as(tp: Any, response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return msgspec.convert(response.json(), tp)  # strict: an undocumented field fails


def test_real_answers_are_what_the_document_says(server: Any, admin: httpx.Client, sdk: httpx.Client) -> None:
    """Every response schema against the server's real answers, with the optional parts present: stats,
    a disabled variant, guardrails, audit entries, counts in several versions, a 304, errors."""
    body = {
        "key": "doc",
        "variants": ["a", {"key": "b", "value": {"rgb": [1, 2]}}, "c"],
        "guardrails": [{"metric": "errors"}],
        "objective": {"reward": "binary", "credit_window": 60},
        "reason": "launch",
    }
    created = _as(out.FlagOut, admin.post("/v1/flags", json=body), 201)
    assert created.stats is not msgspec.UNSET and created.guardrails[0].metric == "errors"
    patched = _as(
        out.FlagOut, admin.patch("/v1/flags/doc", json={"disabled": ["c"], "exploration": 0.5}), 200
    )
    assert patched.disabled[0].variant == "c" and patched.disabled[0].by == "operator"
    rows = [{"flag": "doc", "version": v, "arm": 0, "count": 5} for v in (1, 2)]
    rewards = [{"flag": "doc", "version": 2, "arm": 0, "count": 2, "sum": 1.0, "sum_sq": 1.0}]
    batch = {
        "batch_id": uuid.uuid4().hex,
        "exposures": [*rows, {**rows[0], "flag": "gone"}],
        "rewards": rewards,
    }
    accepted = _as(EventsAccepted, sdk.post("/v1/events", json=batch), 202)
    assert accepted.ignored and accepted.exposures == 2
    _as(out.FlagOut, admin.post("/v1/flags/doc/recompute"), 200)
    listed = _as(out.FlagList, admin.get("/v1/flags"), 200)
    assert listed.flags[0].stats is msgspec.UNSET
    assert _as(out.FlagList, admin.get("/v1/flags", params={"stats": "true"}), 200).flags[0].stats
    assert len(_as(out.History, admin.get("/v1/flags/doc/history"), 200).versions) >= 2
    stats = _as(out.Stats, admin.get("/v1/flags/doc/stats"), 200)
    assert len(stats.periods) >= 2 and stats.variants[0].sum_sq is not msgspec.UNSET
    entries = _as(out.AuditLog, admin.get("/v1/flags/doc/audit"), 200).entries
    assert [e.action for e in entries][-1] == "create"
    config = sdk.get("/v1/config")
    assert _as(out.Config, config, 200).flags[0].table
    assert sdk.get("/v1/config", headers={"If-None-Match": config.headers["etag"]}).status_code == 304
    assert _as(out.Alive, httpx.get(server.url + "/healthz"), 200).status == "ok"
    assert _as(out.Readiness, httpx.get(server.url + "/readyz"), 200).revision is not msgspec.UNSET
    for r, status in (
        (admin.get("/v1/flags/nope"), 404),
        (sdk.get("/v1/flags"), 403),
        (httpx.get(server.url + "/v1/config"), 401),
        (admin.post("/v1/flags", content=b"{", headers={"Content-Type": "application/json"}), 400),
        (admin.post("/v1/flags", json={"key": "doc", "variants": ["a"]}), 409),
        (admin.post("/v1/flags", content=b"{}", headers={"Content-Type": "text/plain"}), 415),
        (admin.post("/v1/flags", json={"key": "Bad"}), 422),
        (admin.patch("/v1/flags/doc", json={"state": "frozen"}), 200),
        (admin.post("/v1/flags/doc/recompute"), 409),
    ):
        if status != 200:
            _as(ErrorBody, r, status)
    assert admin.request("DELETE", "/v1/flags/doc", json={"reason": "done"}).status_code == 204
