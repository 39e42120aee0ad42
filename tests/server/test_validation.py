"""Request validation: every bad body names its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from banditflags_server.api.validation import (
    events_from_json,
    new_flag_from_json,
    parse_json,
    validate_events,
    validate_new_flag,
    validate_patch,
)
from banditflags_server.errors import ApiError, ValidationError

GOOD: dict[str, Any] = {"key": "checkout-button", "variants": ["blue", {"key": "green", "value": {"c": 1}}]}

BAD_FLAGS = [
    ({**GOOD, "key": "Bad Key"}, "key"),
    ({**GOOD, "key": 5}, "key"),
    ({k: v for k, v in GOOD.items() if k != "key"}, "key"),
    ({**GOOD, "variants": []}, "variants"),
    ({**GOOD, "variants": "blue"}, "variants"),
    ({**GOOD, "variants": [f"v{i}" for i in range(101)]}, "variants"),
    ({**GOOD, "variants": ["ok", "no spaces"]}, "variants[1].key"),
    ({**GOOD, "variants": ["a", "a"]}, "variants[1].key"),
    ({**GOOD, "variants": ["a", 3]}, "variants[1]"),
    ({**GOOD, "variants": ["a", {"key": "b", "value": "x" * 40000}]}, "variants[1].value"),
    ({**GOOD, "variants": ["a", {"key": "b", "colour": 1}]}, "variants[1].colour"),
    ({**GOOD, "control": "purple"}, "control"),
    ({**GOOD, "objective": {"reward": "money"}}, "objective.reward"),
    ({**GOOD, "objective": {"direction": "up"}}, "objective.direction"),
    ({**GOOD, "objective": {"unit": "team"}}, "objective.unit"),
    ({**GOOD, "objective": {"credit_window": 0}}, "objective.credit_window"),
    ({**GOOD, "objective": []}, "objective"),
    ({**GOOD, "policy": {"name": "magic"}}, "policy.name"),
    ({**GOOD, "policy": {"floor": 0.9}}, "policy.floor"),
    ({**GOOD, "policy": {"colour": 1}}, "policy.colour"),
    ({**GOOD, "policy": {"name": "fixed", "weights": [1]}}, "policy.weights"),
    ({**GOOD, "policy": "thompson"}, "policy"),
    ({**GOOD, "state": "paused"}, "state"),
    ({**GOOD, "exploration": 1.5}, "exploration"),
    ({**GOOD, "exploration": True}, "exploration"),
    ({**GOOD, "baseline": "best"}, "baseline"),
    ({**GOOD, "recompute_interval": 0}, "recompute_interval"),
    ({**GOOD, "description": "x" * 1001}, "description"),
    ({**GOOD, "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("body", "field"), BAD_FLAGS)
def test_bad_flag_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_new_flag(body, 60.0)
    assert info.value.status == 422
    assert info.value.field == field, info.value.errors


@pytest.mark.parametrize(("body", "field"), BAD_FLAGS)
def test_bad_flag_bytes_name_the_same_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        new_flag_from_json(json.dumps(body).encode(), 60.0)
    assert info.value.status == 422
    assert info.value.field == field, info.value.errors


def test_a_good_flag_gets_defaults() -> None:
    spec = validate_new_flag(GOOD, 30.0)
    assert spec.variants == [{"key": "blue", "value": "blue"}, {"key": "green", "value": {"c": 1}}]
    assert spec.control == 0 and spec.state == "running" and spec.exploration == 1.0
    assert spec.objective == {
        "reward": "binary",
        "direction": "maximize",
        "unit": "decision",
        "credit_window": 86400,
    }
    assert spec.recompute_interval == 30.0
    assert validate_new_flag({**GOOD, "control": "green"}, 60).control == 1


def test_all_problems_are_listed() -> None:
    with pytest.raises(ValidationError) as info:
        validate_new_flag({"key": "", "variants": [], "exploration": 3}, 60.0)
    fields = [f for f, _ in info.value.errors]
    assert fields[:3] == ["key", "variants", "exploration"]
    assert info.value.body()["error"]["code"] == "invalid_field"


def test_body_must_be_an_object() -> None:
    with pytest.raises(ValidationError) as info:
        validate_new_flag([1], 60.0)
    assert info.value.field is None


@pytest.mark.parametrize("raw", [b"{", b"\xff", b'{"a": NaN}', b"Infinity"])
def test_invalid_json_is_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        parse_json(raw)
    assert info.value.status == 400 and info.value.code == "invalid_json"


def test_patch_merges_policy() -> None:
    patch = validate_patch(
        {"policy": {"floor": 0.05}}, current_policy={"name": "ucb1"}, objective={"reward": "binary"}, k=3
    )
    assert patch.changes["policy"] == {"name": "ucb1", "floor": 0.05}
    assert patch.touches_table
    assert not validate_patch({"state": "killed"}, current_policy={}, objective={}, k=3).touches_table
    with pytest.raises(ValidationError) as info:
        validate_patch({"variants": ["a"]}, current_policy={}, objective={}, k=3)
    assert info.value.field == "variants"


EVENTS: dict[str, Any] = {"batch_id": "abcdefgh12", "exposures": [], "rewards": []}
ROW = {"flag": "f", "version": 1, "arm": 0, "count": 1}
BAD_EVENTS = [
    ({**EVENTS, "batch_id": "short"}, "batch_id"),
    ({**EVENTS, "batch_id": "has space!"}, "batch_id"),
    ({**EVENTS, "exposures": {}}, "exposures"),
    ({**EVENTS, "exposures": [ROW, 5]}, "exposures[1]"),
    ({**EVENTS, "exposures": [{**ROW, "count": 0}]}, "exposures[0].count"),
    ({**EVENTS, "exposures": [{**ROW, "count": 1.5}]}, "exposures[0].count"),
    ({**EVENTS, "exposures": [{**ROW, "arm": -1}]}, "exposures[0].arm"),
    ({**EVENTS, "exposures": [{**ROW, "version": "1"}]}, "exposures[0].version"),
    ({**EVENTS, "exposures": [{**ROW, "flag": None}]}, "exposures[0].flag"),
    ({**EVENTS, "rewards": [{**ROW, "sum": 1}]}, "rewards[0].sum_sq"),
    ({**EVENTS, "rewards": [{**ROW, "sum": "1", "sum_sq": 1}]}, "rewards[0].sum"),
    ({**EVENTS, "rewards": [{**ROW, "sum": 1, "sum_sq": -1}]}, "rewards[0].sum_sq"),
    ({**EVENTS, "dropped": -1}, "dropped"),
    ({**EVENTS, "sent_at": []}, "sent_at"),
]


@pytest.mark.parametrize(("body", "field"), BAD_EVENTS)
def test_bad_event_batches_name_the_row(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_events(body)
    assert info.value.field == field


@pytest.mark.parametrize(("body", "field"), BAD_EVENTS)
def test_bad_event_bytes_name_the_row(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        events_from_json(json.dumps(body).encode())
    assert info.value.field == field


def test_too_many_rows_is_413() -> None:
    with pytest.raises(ApiError) as info:
        validate_events({**EVENTS, "exposures": [ROW] * 6000, "rewards": [ROW] * 5000})
    assert info.value.status == 413


def test_a_good_batch() -> None:
    batch = validate_events(
        {
            **EVENTS,
            "sent_at": 1.5,
            "exposures": [ROW],
            "rewards": [{**ROW, "sum": 1, "sum_sq": 1, "extra": "ignored"}],
        }
    )
    assert len(batch.exposures) == 1 and batch.rewards[0].is_reward and batch.rewards[0].sum == 1.0
