"""Targets, rules and segments through the real server (issue 12), on SQLite and PostgreSQL: every bad
field named (the SDK's golden ``invalid`` vectors and the server's own limits), nothing of a rejected
change applied, segments' CRUD, 409 and audit, and what ``/v1/config`` carries."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rules.json").read_text())
VARIANTS = VECTORS["variants"]
RULE = {
    "id": "r",
    "clauses": [{"attribute": "x", "op": "in", "values": ["a"]}],
    "serve": {"variant": "green"},
}


@pytest.fixture(scope="module")
def admin(module_server: Any) -> Any:
    with module_server.client("admin") as client:
        yield client


@pytest.fixture(scope="module")
def sdk(module_server: Any) -> Any:
    with module_server.client("sdk") as client:
        yield client


def _key(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _flag(admin: httpx.Client, **extra: Any) -> dict[str, Any]:
    r = admin.post("/v1/flags", json={"key": _key("f"), "variants": VARIANTS, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _segment(admin: httpx.Client, key: str, **extra: Any) -> None:
    r = admin.post("/v1/segments", json={"key": key, **extra})
    assert r.status_code == 201, r.text


def _refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["error"]["errors"]], r.text


# Segments that cannot be created on the server (invalid, a cycle): segments' clauses are checked when
# they are created and may not use in_segment, so those vectors are the segment tests' below.
GOLDEN = [v for v in VECTORS["invalid"] if not v["segment_problems"]]


@pytest.mark.parametrize("case", GOLDEN, ids=[v["name"] for v in GOLDEN])
def test_golden_invalid_flags_name_the_field(admin: httpx.Client, case: dict[str, Any]) -> None:
    suffix = secrets.token_hex(3)
    renamed: dict[str, str] = {}
    for seg in case["segments"]:
        renamed[seg["key"]] = f"{seg['key']}-{suffix}"
        _segment(admin, renamed[seg["key"]], **{k: v for k, v in seg.items() if k != "key"})
    flag = json.loads(json.dumps(case["flag"]))
    for rule in flag.get("rules", []):
        for clause in rule["clauses"]:
            if clause.get("op") == "in_segment":
                clause["values"] = [renamed.get(v, v) for v in clause["values"]]
    body = {**flag, "key": _key("bad")}
    _refused(admin.post("/v1/flags", json=body), case["path"])
    assert admin.get(f"/v1/flags/{body['key']}").status_code == 404
    # The same lists as a PATCH of an existing flag: refused at the same field, nothing changed.
    good = _flag(admin)
    patch = {k: flag[k] for k in ("rules", "targets") if k in flag}
    _refused(admin.patch(f"/v1/flags/{good['key']}", json=patch), case["path"])
    assert admin.get(f"/v1/flags/{good['key']}").json()["updated_at"] == good["updated_at"]


SERVER_CASES = [
    ("unit twice in a flag", {"targets": [{"variant": "green", "units": ["u1"]}, {"variant": "blue", "units": ["u1"]}]}, "targets[1].units[0]"),  # noqa: E501
    ("unit id too long", {"targets": [{"variant": "green", "units": ["u" * 257]}]}, "targets[0].units[0]"),
    ("too many units in a target", {"targets": [{"variant": "green", "units": [f"u{i}" for i in range(1001)]}]}, "targets[0].units"),  # noqa: E501
    ("too many units in a flag", {"targets": [{"variant": "green", "units": [f"{j}-{i}" for i in range(1000)]} for j in range(11)]}, "targets[10].units"),  # noqa: E501
    ("bad rule id", {"rules": [{**RULE, "id": "-x"}]}, "rules[0].id"),
    ("unknown clause field", {"rules": [{**RULE, "clauses": [{"attribute": "x", "op": "in", "values": ["a"], "nope": 1}]}]}, "rules[0].clauses[0].nope"),  # noqa: E501
    ("serve nothing", {"rules": [{**RULE, "serve": {}}]}, "rules[0].serve"),
    ("bandit false alone", {"rules": [{**RULE, "serve": {"bandit": False}}]}, "rules[0].serve"),
    ("too many rules", {"rules": [{**RULE, "id": f"r{i}"} for i in range(101)]}, "rules"),
    ("second rule's op", {"rules": [RULE, {**RULE, "id": "s", "clauses": [RULE["clauses"][0], {"attribute": "y", "op": "like", "values": ["a"]}]}]}, "rules[1].clauses[1].op"),  # noqa: E501
    ("unknown segment", {"rules": [{**RULE, "clauses": [{"op": "in_segment", "values": ["no-such-segment"]}]}]}, "rules[0].clauses[0].values[0]"),  # noqa: E501
    ("weight not a number", {"rules": [{**RULE, "serve": {"weights": [1, "x", 0]}}]}, "rules[0].serve.weights[1]"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in SERVER_CASES], ids=[c[0] for c in SERVER_CASES])
def test_server_limits_name_the_field(admin: httpx.Client, body: dict[str, Any], field: str) -> None:
    _refused(admin.post("/v1/flags", json={"key": _key("bad"), "variants": VARIANTS, **body}), field)
    good = _flag(admin)
    revision_before = admin.get(f"/v1/flags/{good['key']}").json()
    _refused(admin.patch(f"/v1/flags/{good['key']}", json={**body, "exploration": 0.5}), field)
    assert admin.get(f"/v1/flags/{good['key']}").json() | {"stats": None} == revision_before | {"stats": None}


def test_rules_and_targets_are_stored_served_and_audited(admin: httpx.Client, sdk: httpx.Client) -> None:
    seg = _key("beta")
    _segment(admin, seg, included=["alice"], clauses=[{"attribute": "plan", "op": "in", "values": ["beta"]}])
    rules = [
        {"id": "us", "clauses": [{"attribute": "country", "op": "in", "values": ["us", "ca"]}], "serve": {"bandit": True}},  # noqa: E501
        {"id": "staff", "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"], "negate": False}], "serve": {"variant": "green"}},  # noqa: E501
        {"id": "beta", "clauses": [{"op": "in_segment", "values": [seg]}], "serve": {"weights": [0.5, 0.5, 0.0]}},  # noqa: E501
    ]  # fmt: skip
    targets = [{"variant": "blue", "units": ["bob", "carol"]}]
    flag = _flag(admin, rules=rules, targets=targets)
    assert flag["targets"] == targets
    assert [r["id"] for r in flag["rules"]] == ["us", "staff", "beta"]
    assert flag["rules"][0]["clauses"][0] == {
        "attribute": "country",
        "op": "in",
        "values": ["us", "ca"],
        "negate": False,
    }
    assert flag["rules"][2]["clauses"][0] == {"op": "in_segment", "values": [seg], "negate": False}
    assert set(flag["rule_allocations"]) == {"us"}
    us = flag["rule_allocations"]["us"]
    assert us["version"] == 1 and sum(run for _, run in us["table"]) == 10_000

    config = sdk.get("/v1/config").json()
    served = next(f for f in config["flags"] if f["key"] == flag["key"])
    assert served["rules"] == flag["rules"] and served["targets"] == targets
    assert served["rule_allocations"] == {"us": us}
    assert {
        "key": seg,
        "clauses": [{"attribute": "plan", "op": "in", "values": ["beta"], "negate": False}],
        "included": ["alice"],
        "excluded": [],
    } in config["segments"]

    # A PATCH replaces the lists whole; the audit log has before and after.
    r = admin.patch(f"/v1/flags/{flag['key']}", json={"rules": rules[1:], "targets": [], "reason": "narrow"})
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["rules"]] == ["staff", "beta"] and r.json()["targets"] == []
    assert r.json()["rule_allocations"] == {}  # not served for a rule that is gone
    entry = admin.get(f"/v1/flags/{flag['key']}/audit").json()["entries"][0]
    assert (
        entry["reason"] == "narrow" and entry["after"]["targets"] == [] and len(entry["before"]["rules"]) == 3
    )
    # The rule comes back: it resumes its own table and version.
    r = admin.patch(f"/v1/flags/{flag['key']}", json={"rules": rules})
    assert r.json()["rule_allocations"]["us"] == us


def test_segments_crud_conflict_and_audit(admin: httpx.Client, sdk: httpx.Client) -> None:
    key = _key("seg")
    revision = int(sdk.get("/v1/config").headers["ETag"].strip('"'))
    r = admin.post("/v1/segments", json={"key": key, "included": ["a"], "description": "d", "reason": "new"})
    assert r.status_code == 201 and r.headers["Location"] == f"/v1/segments/{key}"
    assert r.json()["included"] == ["a"] and r.json()["clauses"] == []
    assert int(sdk.get("/v1/config").headers["ETag"].strip('"')) > revision
    assert admin.post("/v1/segments", json={"key": key}).status_code == 409
    assert key in [s["key"] for s in admin.get("/v1/segments").json()["segments"]]
    r = admin.patch(
        f"/v1/segments/{key}",
        json={"excluded": ["b"], "clauses": [{"attribute": "age", "op": "gte", "values": [18]}]},
    )
    assert r.status_code == 200 and r.json()["excluded"] == ["b"] and r.json()["included"] == ["a"]
    assert admin.get(f"/v1/segments/{key}").json()["clauses"][0]["op"] == "gte"

    flag = _flag(admin, rules=[{**RULE, "clauses": [{"op": "in_segment", "values": [key]}]}])
    r = admin.delete(f"/v1/segments/{key}")
    assert r.status_code == 409 and r.json()["flags"] == [flag["key"]], r.text
    assert r.json()["error"]["code"] == "conflict"
    assert admin.get(f"/v1/segments/{key}").status_code == 200
    admin.patch(f"/v1/flags/{flag['key']}", json={"rules": []}).raise_for_status()
    assert admin.delete(f"/v1/segments/{key}", params={}).status_code == 204
    assert admin.get(f"/v1/segments/{key}").status_code == 404
    assert admin.delete(f"/v1/segments/{key}").status_code == 404


SEGMENT_CASES = [
    ("in_segment in a segment", {"clauses": [{"op": "in_segment", "values": ["x"]}]}, "clauses[0].op"),
    ("bad regex", {"clauses": [{"attribute": "a", "op": "matches", "values": ["(a+)+"]}]}, "clauses[0].values[0]"),  # noqa: E501
    ("unit twice", {"included": ["a", "a"]}, "included[1]"),
    ("empty unit", {"excluded": [""]}, "excluded[0]"),
    ("unknown field", {"nope": 1}, "nope"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in SEGMENT_CASES], ids=[c[0] for c in SEGMENT_CASES])
def test_segment_errors_name_the_field(admin: httpx.Client, body: dict[str, Any], field: str) -> None:
    key = _key("seg")
    _refused(admin.post("/v1/segments", json={"key": key, **body}), field)
    assert admin.get(f"/v1/segments/{key}").status_code == 404
    _segment(admin, key)
    before = admin.get(f"/v1/segments/{key}").json()
    _refused(admin.patch(f"/v1/segments/{key}", json=body), field)
    assert admin.get(f"/v1/segments/{key}").json() == before


def test_segment_audit_entries(module_server: Any, admin: httpx.Client) -> None:
    from banditflags_server.settings import database_url
    from banditflags_server.storage import audit
    from banditflags_server.storage.schema import create_engine

    key = _key("seg")
    _segment(admin, key, reason="made")
    admin.patch(f"/v1/segments/{key}", json={"included": ["z"], "reason": "grow"}).raise_for_status()
    assert admin.request("DELETE", f"/v1/segments/{key}", json={"reason": "gone"}).status_code == 204
    engine = create_engine(database_url(module_server.db))
    try:
        found = audit.entries(engine, key, kind="segment")
        assert audit.entries(engine, key) == []  # a flag's log never shows a segment's entries
    finally:
        engine.dispose()
    assert [(e.action, e.reason) for e in found] == [
        ("delete", "gone"),
        ("update", "grow"),
        ("create", "made"),
    ]
    assert found[1].before == {"included": []} and found[1].after == {"included": ["z"]}


def test_rule_rows_are_reported_per_rule(admin: httpx.Client, sdk: httpx.Client) -> None:
    rules = [
        {
            "id": "us",
            "clauses": [{"attribute": "c", "op": "in", "values": ["us"]}],
            "serve": {"bandit": True},
        },
        {"id": "staff", "clauses": [{"attribute": "s", "op": "exists"}], "serve": {"variant": "green"}},
    ]
    flag = _flag(admin, rules=rules, targets=[{"variant": "blue", "units": ["bob"]}], policy={"burn_in": 10})
    key = flag["key"]

    def rows(rule: str | None, n: list[int], s: list[int]) -> dict[str, list[dict[str, Any]]]:
        extra = {} if rule is None else {"rule": rule}
        return {
            "exposures": [
                {"flag": key, "version": 1, "arm": i, "count": c, **extra} for i, c in enumerate(n)
            ],
            "rewards": [
                {"flag": key, "version": 1, "arm": i, "count": c, "sum": c, "sum_sq": c, **extra}
                for i, c in enumerate(s)
            ],
        }

    for i, (rule, n, s) in enumerate(
        [(None, [50, 50, 50], [40, 5, 5]), ("us", [50, 50, 50], [5, 5, 40]), ("staff", [0, 9, 0], [0, 3, 0]),
         ("target", [0, 0, 2], [0, 0, 1])]
    ):  # fmt: skip
        body = {"batch_id": f"rules-{key}-{i}", **rows(rule, n, s)}
        body["exposures"] = [e for e in body["exposures"] if e["count"]]
        body["rewards"] = [e for e in body["rewards"] if e["count"]]
        r = sdk.post("/v1/events", json=body)
        assert r.status_code == 202 and not r.json()["ignored"], r.text
    got = admin.get(f"/v1/flags/{key}").json()
    assert [s["n"] for s in got["stats"]] == [50, 50, 50]
    report = {r["id"]: r for r in got["rules_report"]}
    assert list(report) == ["us", "staff", "target"]
    assert report["us"]["bandit"] and report["us"]["version"] == 1 and len(report["us"]["weights"]) == 3
    assert [s["n"] for s in report["us"]["stats"]] == [50, 50, 50]
    assert [s["rewards"] for s in report["us"]["stats"]] == [5, 5, 40]
    assert [s["n"] for s in report["staff"]["stats"]] == [0, 9, 0] and report["staff"]["version"] is None
    assert [s["n"] for s in report["target"]["stats"]] == [0, 0, 2]

    r = admin.post(f"/v1/flags/{key}/recompute")
    assert r.status_code == 200, r.text
    us = r.json()["rule_allocations"]["us"]
    assert us["version"] == 2 and max(range(3), key=lambda i: us["weights"][i]) == 2
    assert max(range(3), key=lambda i: r.json()["weights"][i]) == 0  # the default allocation: its own rows
    served = next(f for f in sdk.get("/v1/config").json()["flags"] if f["key"] == key)
    assert served["rule_allocations"]["us"]["version"] == 2
    history = admin.get(f"/v1/flags/{key}/history").json()
    assert [v["version"] for v in history["rules"]["us"]] == [1, 2]
    stats = admin.get(f"/v1/flags/{key}/stats").json()
    assert [r["id"] for r in stats["rules"]] == ["us", "staff", "target"]
    assert "sum_sq" in stats["rules"][0]["stats"][0]


def test_the_sdk_compiles_what_the_config_serves(admin: httpx.Client, sdk: httpx.Client) -> None:
    from banditflags._config import _parse_table, parse_config
    from banditflags._segments import compile_segments
    from banditflags._targeting import Match, compile_flag

    seg = _key("vip")
    _segment(admin, seg, included=["victor"], excluded=["eve"])
    rules = [
        {"id": "us", "clauses": [{"attribute": "country", "op": "in", "values": ["us"]}], "serve": {"bandit": True}},  # noqa: E501
        {"id": "vip", "clauses": [{"op": "in_segment", "values": [seg]}], "serve": {"variant": "blue"}},
        {"id": "new", "clauses": [{"attribute": "app", "op": "semver_gte", "values": ["2.0.0"]}],
         "serve": {"weights": [0, 1, 0]}},
    ]  # fmt: skip
    flag = _flag(admin, rules=rules, targets=[{"variant": "green", "units": ["tina"]}])
    config = sdk.get("/v1/config").json()
    parse_config(config)  # an SDK without targeting takes the config as it is (ignores the new fields)
    served = next(f for f in config["flags"] if f["key"] == flag["key"])
    tables = {r: _parse_table(a["table"], 3, r) for r, a in served["rule_allocations"].items()}
    compiled = compile_flag(served, VARIANTS, compile_segments(config["segments"]), rule_tables=tables)
    assert not isinstance(compiled, Exception) and compiled is not None, compiled

    def rule(unit: str, attributes: dict[str, Any]) -> str | None:
        assert compiled is not None and not isinstance(compiled, Exception)
        m = compiled.evaluate(unit, attributes)
        return m.rule if isinstance(m, Match) else None

    assert rule("tina", {"country": "us"}) == "target"
    assert rule("u1", {"country": "us"}) == "us"
    assert rule("victor", {}) == "vip" and rule("eve", {}) is None
    assert rule("u2", {"app": "2.1.0"}) == "new" and rule("u3", {"app": "1.9"}) is None
