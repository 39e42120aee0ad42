"""The request schemas (api/schemas.py): JSON Schema for the OpenAPI document, one behaviour for the
API's bytes and the console's dicts, and no input that makes the parsers fail (never a 500)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, get_args

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banditflags_server.api import schemas
from banditflags_server.api.schema_errors import MAX_PROBLEMS, message_for
from banditflags_server.api.validation import (
    events_from_json,
    new_flag_from_json,
    parse_json,
    patch_from_json,
    patch_validator,
    reason_from_json,
    validate_events,
    validate_new_flag,
)
from banditflags_server.engine import DIRECTIONS, REWARDS
from banditflags_server.engine.planning import new_flag
from banditflags_server.errors import ApiError
from banditflags_server.records import Flag

GOOD_FLAG: dict[str, Any] = {
    "key": "checkout-button",
    "description": "Colour of the button",
    "variants": [{"key": "blue", "value": "#00f"}, "green", {"key": "orange", "value": {"rgb": [255, 128]}}],
    "control": "blue",
    "objective": {"reward": "continuous", "direction": "minimize", "unit": "user", "credit_window": 3600},
    "policy": {"name": "thompson", "floor": 0.05, "burn_in": 10},
    "state": "frozen",
    "exploration": 0.5,
    "baseline": "leader",
    "recompute_interval": 30,
    "guardrails": [{"metric": "errors", "tolerance": 0, "relative": False, "confidence": 0.95}],
    "targets": [{"variant": "green", "units": ["alice", "bob"]}],
    "rules": [
        {
            "id": "us",
            "clauses": [{"attribute": "country", "op": "in", "values": ["us"]}],
            "serve": {"bandit": True},
        },
        {
            "id": "v2",
            "clauses": [{"attribute": "app", "op": "semver_gte", "values": ["2.0.0-rc.1"], "negate": True}],
            "serve": {"weights": [0.5, 0.5, 0]},
        },
    ],
    "reason": "launch",
}
GOOD_PATCH: dict[str, Any] = {
    "state": "killed",
    "exploration": 0.2,
    "policy": {"floor": 0.02},
    "baseline": "control",
    "description": "",
    "recompute_interval": 10.5,
    "guardrails": [],
    "disabled": ["green"],
    "targets": [],
    "rules": [
        {"id": "staff", "clauses": [{"op": "in_segment", "values": ["staff"]}], "serve": {"variant": "blue"}}
    ],
    "reason": "pager",
}
ROW = {"flag": "checkout-button", "version": 3, "arm": 1, "count": 17}
GOOD_EVENTS: dict[str, Any] = {
    "batch_id": "0f8e2c7c9b4d4a4f8f2b1f1e2d3c4b5a",
    "sent_at": "2026-11-27T23:10:00Z",
    "sdk": "banditflags-python/0.1.0",
    "exposures": [ROW],
    "rewards": [
        {**ROW, "count": 4, "sum": 4.0, "sum_sq": 4.0},
        {**ROW, "sum": 0, "sum_sq": 0, "metric": "errors"},
    ],
    "dropped": 0,
    "config_revision": 42,
    "config_age": 3.2,
}
SAMPLES: dict[str, dict[str, Any]] = {
    "POST /v1/flags": GOOD_FLAG,
    "PATCH /v1/flags/{key}": GOOD_PATCH,
    "DELETE /v1/flags/{key}": {"reason": "experiment over"},
    "POST /v1/events": GOOD_EVENTS,
    "POST /v1/segments": {
        "key": "beta-testers",
        "clauses": [{"attribute": "plan", "op": "in", "values": ["beta", 3, True], "negate": False}],
        "included": ["alice"],
        "excluded": ["eve"],
        "description": "early adopters",
        "reason": "issue 12",
    },
    "PATCH /v1/segments/{key}": {"clauses": [{"op": "exists", "attribute": "plan"}], "included": []},
    "DELETE /v1/segments/{key}": {"reason": "unused"},
}


def _flag() -> Flag:
    spec = validate_new_flag({k: v for k, v in GOOD_FLAG.items() if k != "state"}, 60.0)
    return new_flag(spec, np.random.default_rng(0), 0.0)[0]


# -- a JSON Schema check of the subset msgspec writes, to test the generated schemas against samples -----


def _conforms(schema: dict[str, Any], value: Any, defs: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return _conforms(defs[schema["$ref"].rsplit("/", 1)[1]], value, defs)
    if "anyOf" in schema and not any(_conforms(s, value, defs) for s in schema["anyOf"]):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "integer": number and isinstance(value, int),
        "number": number,
    }
    if "type" in schema and not kinds[schema["type"]]:
        return False
    if number and not (
        value >= schema.get("minimum", -math.inf)
        and value <= schema.get("maximum", math.inf)
        and value > schema.get("exclusiveMinimum", -math.inf)
        and value < schema.get("exclusiveMaximum", math.inf)
    ):
        return False
    if isinstance(value, str) and not (
        schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf)
        and re.search(schema.get("pattern", ""), value)
    ):
        return False
    if isinstance(value, list) and not (
        schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf)
        and all(_conforms(schema.get("items", {}), x, defs) for x in value)
    ):
        return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        return all(_conforms(props[k], v, defs) for k, v in value.items() if k in props)
    return True


def _components() -> tuple[dict[str, Any], dict[str, Any]]:
    types = [*schemas.REQUEST_BODIES.values(), schemas.EventsAccepted, schemas.ErrorBody]
    refs, defs = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    return dict(zip([t.__name__ for t in types], refs, strict=True)), defs


def test_every_request_body_has_a_json_schema_its_sample_conforms_to() -> None:
    refs, defs = _components()
    assert set(SAMPLES) == set(schemas.REQUEST_BODIES)
    for route, body_type in schemas.REQUEST_BODIES.items():
        schema = defs[body_type.__name__]
        assert schema["type"] == "object", route
        assert _conforms(refs[body_type.__name__], SAMPLES[route], defs), route
        msgspec.json.decode(json.dumps(SAMPLES[route]).encode(), type=body_type)  # and the decoder agrees
    new = defs["NewFlagBody"]
    assert new["required"] == ["key", "variants"] and new["additionalProperties"] is False
    assert "additionalProperties" not in defs["EventsBody"]  # newer SDKs may send more
    assert defs["EventsBody"]["properties"]["config_revision"]  # the SDK staleness report (docs/telemetry.md)


@pytest.mark.parametrize(
    ("route", "change"),
    [
        ("POST /v1/flags", {"key": "Bad Key"}),
        ("POST /v1/flags", {"key": "trailing-newline\n"}),
        ("POST /v1/flags", {"variants": []}),
        ("POST /v1/flags", {"variants": ["a b"]}),
        ("POST /v1/flags", {"exploration": 1.5}),
        ("POST /v1/flags", {"surprise": 1}),
        ("PATCH /v1/flags/{key}", {"state": "paused"}),
        ("DELETE /v1/flags/{key}", {"reason": "x" * 501}),
        ("POST /v1/events", {"batch_id": "short"}),
        ("POST /v1/events", {"exposures": [{**ROW, "count": 0}]}),
        ("POST /v1/events", {"config_age": -1}),
    ],
)
def test_the_schema_and_the_decoder_refuse_the_same_bodies(route: str, change: dict[str, Any]) -> None:
    refs, defs = _components()
    body_type = schemas.REQUEST_BODIES[route]
    body = {**SAMPLES[route], **change}
    assert not _conforms(refs[body_type.__name__], body, defs)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(body).encode(), type=body_type)


def test_error_bodies_and_events_answers_match_their_schemas() -> None:
    err = ApiError(422, "key: must match", field="key", errors=[("key", "must match"), (None, "x")])
    assert msgspec.convert(err.body(), schemas.ErrorBody).error.errors[1].field is None
    assert msgspec.convert(ApiError(404, "flag 'x' not found").body(), schemas.ErrorBody).error.field is None
    answer = schemas.EventsAccepted("b" * 8, False, 1, 0, [schemas.Ignored("exposures[0]", "unknown flag")])
    assert json.loads(msgspec.json.encode(answer)) == {
        "batch_id": "b" * 8,
        "duplicate": False,
        "exposures": 1,
        "rewards": 0,
        "ignored": [{"field": "exposures[0]", "reason": "unknown flag"}],
        "duplicates": 0,
    }


def test_the_schema_literals_are_the_engines() -> None:
    assert set(get_args(schemas.Reward)) == set(REWARDS)
    assert set(get_args(schemas.Direction)) == set(DIRECTIONS)


def test_good_bodies_become_the_records() -> None:
    spec, reason = new_flag_from_json(json.dumps(GOOD_FLAG).encode(), 60.0)
    assert reason == "launch"
    assert spec == validate_new_flag(GOOD_FLAG, 60.0)
    assert spec.variants[1] == {"key": "green", "value": "green"} and spec.control == 0
    # Numbers are kept as given where they were before (an integer stays an integer on the wire).
    assert spec.objective["credit_window"] == 3600 and isinstance(spec.objective["credit_window"], int)
    assert spec.guardrails == [
        {
            "direction": "minimize",
            "reward": "binary",
            "tolerance": 0,
            "relative": False,
            "confidence": 0.95,
            "metric": "errors",
        }
    ]
    assert isinstance(spec.guardrails[0]["tolerance"], int)
    assert isinstance(spec.recompute_interval, float) and isinstance(spec.exploration, float)

    validate, reason = patch_from_json(json.dumps(GOOD_PATCH).encode())
    patch = validate(_flag())
    assert reason == "pager" and patch == patch_validator(GOOD_PATCH)(_flag())
    assert patch.changes["policy"] == {"name": "thompson", "floor": 0.02, "burn_in": 10}
    assert list(patch.changes) == [
        "state",
        "exploration",
        "baseline",
        "description",
        "recompute_interval",
        "guardrails",
        "disabled",
        "targets",
        "rules",
        "policy",
    ]
    clause = {"op": "in_segment", "values": ["staff"], "negate": False}
    assert patch.changes["rules"][0]["clauses"][0] == clause
    assert spec.rules[1]["serve"] == {"weights": [0.5, 0.5, 0.0]}
    assert spec.targets[0]["units"] == ["alice", "bob"]

    batch, report = events_from_json(json.dumps(GOOD_EVENTS).encode())
    assert batch == validate_events(GOOD_EVENTS) and report == (42, 3.2)
    rows = [*batch.exposures, *batch.rewards]
    assert [r.where for r in rows] == ["exposures[0]", "rewards[0]", "rewards[1]"]
    assert batch.rewards[1].metric == "errors" and batch.rewards[0].metric is None
    assert reason_from_json(b'{"reason": " over "}') == "over"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD_FLAG, "key": "checkout\n"}, "key"),
        ({**GOOD_FLAG, "variants": ["blue", "green\n"]}, "variants[1].key"),
        ({**GOOD_FLAG, "variants": ["blue", {"key": "green\n"}]}, "variants[1].key"),
        ({**GOOD_FLAG, "guardrails": [{"metric": "errors\n"}]}, "guardrails[0].metric"),
        ({**GOOD_FLAG, "reason": 7}, "reason"),
        ({**GOOD_FLAG, "reason": "x" * 501}, "reason"),
        ({**GOOD_FLAG, "control": 3}, "control"),
        ({**GOOD_FLAG, "control": "Bad Key"}, "control"),
        ({**GOOD_FLAG, "objective": {"credit_window": True}}, "objective.credit_window"),
        ({**GOOD_FLAG, "guardrails": [{"metric": "e"}, {"metric": "e"}]}, "guardrails[1].metric"),
    ],
)
def test_more_bad_flags_name_the_field(body: dict[str, Any], field: str) -> None:
    for attempt in (
        lambda: validate_new_flag(body, 60.0),
        lambda: new_flag_from_json(json.dumps(body).encode(), 60.0),
    ):
        with pytest.raises(ApiError) as info:
            attempt()
        assert info.value.status == 422 and info.value.field == field, info.value.errors


def test_the_messages_say_what_the_field_must_be() -> None:
    with pytest.raises(ApiError) as info:
        validate_new_flag({**GOOD_FLAG, "exploration": 2, "recompute_interval": 0, "state": "x"}, 60.0)
    assert info.value.errors == [
        ("state", "must be one of running, frozen, killed"),
        ("exploration", "must be a number in [0, 1]"),
        ("recompute_interval", "must be a number of seconds in 1..86400"),
    ]
    assert info.value.message == "state: must be one of running, frozen, killed"
    assert message_for(schemas.ConfigRevision | None) == "must be an integer ≥ 0 or null"
    assert message_for(schemas.VariantItem) == "must be a string or an object {key, value}"
    with pytest.raises(ApiError) as info:
        new_flag_from_json(b'{"variants": ["a"]}', 60.0)
    assert info.value.errors == [("key", "is required")]


def test_checks_across_fields_run_beside_the_schemas_findings() -> None:
    body = {"key": "Bad", "variants": ["a", "a", "b"], "control": "zz", "state": "x", "policy": {"floor": 1}}
    for attempt in (
        lambda: validate_new_flag(body, 60.0),
        lambda: new_flag_from_json(json.dumps(body).encode(), 60.0),
    ):
        with pytest.raises(ApiError) as info:
            attempt()
        assert [f for f, _ in info.value.errors] == [
            "key",
            "state",
            "variants[1].key",
            "control",
            "policy.floor",
        ]
    # A PATCH is refused when the flag is known (a missing flag is a 404 first, as before), with the
    # checks against the flag; only bad JSON is refused at once.
    validate, _ = patch_from_json(b'{"state": "paused", "disabled": ["blue"], "reason": "x"}')
    with pytest.raises(ApiError) as info:
        validate(_flag())
    assert info.value.errors == [
        ("state", "must be one of running, frozen, killed"),
        ("disabled[0]", "the control cannot be disabled"),
    ]
    with pytest.raises(ApiError) as info:
        patch_from_json(b'{"state": "paused",')
    assert info.value.status == 400


def test_every_bad_row_is_listed_up_to_the_cap() -> None:
    rows = [{**ROW, "count": 0}] * 3 + [ROW, {**ROW, "arm": "1"}]
    with pytest.raises(ApiError) as info:
        events_from_json(json.dumps({**GOOD_EVENTS, "exposures": rows, "dropped": -1}).encode())
    assert [f for f, _ in info.value.errors] == [
        "exposures[0].count",
        "exposures[1].count",
        "exposures[2].count",
        "exposures[4].arm",
        "dropped",
    ]
    many = {**GOOD_EVENTS, "exposures": [{**ROW, "count": 0}] * 5000}
    with pytest.raises(ApiError) as info:
        events_from_json(json.dumps(many).encode())
    assert len(info.value.errors) == MAX_PROBLEMS and info.value.field == "exposures[0].count"


def test_bad_json_past_a_bad_field_is_still_400_and_too_many_rows_413() -> None:
    with pytest.raises(ApiError) as info:
        events_from_json(b'{"batch_id": 5, "exposures": [nope')
    assert info.value.status == 400
    rows = json.dumps([{**ROW, "count": 0}] * 10_001)
    with pytest.raises(ApiError) as info:
        events_from_json(f'{{"batch_id": "x", "exposures": {rows}}}'.encode())
    assert info.value.status == 413 and info.value.field == "exposures"
    with pytest.raises(ApiError) as info:
        events_from_json(json.dumps({**GOOD_EVENTS, "exposures": [ROW] * 10_001}).encode())
    assert info.value.status == 413
    for raw in (b"\xef\xbb\xbf{}", b'{"a": 1} x', b'"\\ud800"', b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ApiError) as info:
            parse_json(raw)
        assert info.value.status == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD_EVENTS, "rewards": [{**ROW, "sum": math.inf, "sum_sq": 1.0}]}, "rewards[0].sum"),
        ({**GOOD_EVENTS, "rewards": [{**ROW, "sum": 1.0, "sum_sq": math.nan}]}, "rewards[0].sum_sq"),
        ({**GOOD_EVENTS, "config_age": math.inf}, "config_age"),
        ({**GOOD_EVENTS, "sent_at": math.nan}, "sent_at"),
    ],
)
def test_dicts_cannot_pass_what_json_cannot_carry(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as info:
        validate_events(body)
    assert info.value.status == 422 and info.value.field == field


def test_unknown_fields_of_a_batch_are_ignored() -> None:
    body = {**GOOD_EVENTS, "future": {"x": 1}, "exposures": [{**ROW, "metric": "ignored", "extra": [1]}]}
    batch, _ = events_from_json(json.dumps(body).encode())
    assert batch.exposures[0].metric is None and batch.exposures[0].count == 17


# -- properties: arbitrary input never fails the parsers, and bytes and dicts get the same answer -------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # JSON strings are UTF-8
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12
)


EDGES = st.sampled_from([None, True, 0, -1, 1, 0.5, 1.5, 10**13, 2**70, "", "x", "Bad Key", "ok\n", [], {}])


@st.composite
def _mutated(draw: st.DrawFn, good: Any) -> Any:
    """A value like ``good`` with a few changes at any depth (fields dropped, added, replaced) or any JSON."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(JSON_VALUES)
    if kind == 1:
        return draw(EDGES)
    if isinstance(good, dict):
        out = dict(good)
        for name in draw(st.lists(st.sampled_from([*good, "other"]), max_size=2, unique=True)):
            if draw(st.booleans()):
                out.pop(name, None)
            else:
                out[name] = draw(_mutated(good.get(name)))
        return out
    if isinstance(good, list) and good:
        return draw(st.lists(st.sampled_from(good).flatmap(_mutated), max_size=len(good) + 2))
    return good


FLAG_BODIES = _mutated(GOOD_FLAG)
PATCH_BODIES = _mutated(GOOD_PATCH)
EVENT_BODIES = _mutated(GOOD_EVENTS)


def _outcome(attempt: Any) -> Any:
    """What a client would see: the value, or the status with every named field. Never another error."""
    try:
        return ("ok", attempt())
    except ApiError as exc:
        assert exc.status in (400, 413, 422), exc.body()
        assert exc.message and all(m for _, m in exc.errors)
        if exc.status == 422:  # field-named: the first problem is the field
            assert exc.errors and exc.field == exc.errors[0][0]
        return (exc.status, [f for f, _ in exc.errors])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FLAG_BODIES)
def test_any_flag_body_gets_an_answer_the_same_from_bytes_and_dicts(body: Any) -> None:
    from_bytes = _outcome(lambda: new_flag_from_json(json.dumps(body).encode(), 60.0)[0])
    assert from_bytes == _outcome(lambda: validate_new_flag(body, 60.0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATCH_BODIES)
def test_any_patch_body_gets_an_answer_the_same_from_bytes_and_dicts(body: Any) -> None:
    flag = _flag()
    from_bytes = _outcome(lambda: patch_from_json(json.dumps(body).encode())[0](flag))
    assert from_bytes == _outcome(lambda: patch_validator(body)(flag))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENT_BODIES)
def test_any_events_body_gets_an_answer_the_same_from_bytes_and_dicts(body: Any) -> None:
    from_bytes = _outcome(lambda: events_from_json(json.dumps(body).encode())[0])
    assert from_bytes == _outcome(lambda: validate_events(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_get_a_4xx_or_a_value(raw: bytes) -> None:
    flag = _flag()
    for attempt in (
        lambda: new_flag_from_json(raw, 60.0),
        lambda: patch_from_json(raw)[0](flag),
        lambda: events_from_json(raw),
        lambda: reason_from_json(raw),
        lambda: parse_json(raw),
    ):
        _outcome(attempt)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                # Any text but NUL (refused: PostgreSQL cannot store it, test_fuzz_findings.py).
                "flag": st.text(
                    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    min_size=1,
                    max_size=8,
                ),
                "version": st.integers(1, 10**12),
                "arm": st.integers(0, 10**12),
                "count": st.integers(1, 10**12),
            }
        ),
        max_size=20,
    )
)
def test_valid_rows_arrive_as_sent(rows: list[dict[str, Any]]) -> None:
    batch, _ = events_from_json(json.dumps({"batch_id": "abcdefgh", "exposures": rows}).encode())
    assert [(r.where, r.flag, r.version, r.arm, r.count) for r in batch.exposures] == [
        (f"exposures[{i}]", r["flag"], r["version"], r["arm"], r["count"]) for i, r in enumerate(rows)
    ]
