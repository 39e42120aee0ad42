"""parse_config: the whole /v1/config payload is validated; errors name the field."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from banditflags import ConfigError
from banditflags._config import parse_config


def test_valid_payload_precomputes_the_hot_path(build: Any) -> None:
    payload = build.config(build.flag("btn", table=[[1, 2500], [0, 7500]], version=4), revision=9)
    payload["unknown_top_level"] = {"ignored": True}
    payload["flags"][0]["future_field"] = [1, 2, 3]
    snap = parse_config(payload)
    assert snap.revision == 9
    f = snap.flags["btn"]
    assert f.prefix == "salt-btn."
    assert f.keys == ("a", "b") and f.values == ("A", {"color": "#00f"})
    assert f.control == 0 and f.control_key == "a" and not f.killed
    assert len(f.table) == 10_000 and f.table[0] == 1 and f.table[2500] == 0
    assert f.propensities == (0.75, 0.25)
    assert f.exposure_keys == (("btn", 4, 0, None), ("btn", 4, 1, None))
    assert f.decisions[1].variant == "b" and f.decisions[1].propensity == 0.25
    assert f.binary and not f.user_unit and f.credit_window == 86400.0
    assert f.disabled_decision.reason == "disabled" and f.disabled_decision.variant == "a"


def test_snapshots_are_immutable(build: Any) -> None:
    snap = parse_config(build.config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.revision = 2
    with pytest.raises(TypeError):
        snap.flags["x"] = snap.flags["btn"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.flags["btn"].killed = True


def test_objective_defaults_and_user_unit(build: Any) -> None:
    snap = parse_config(build.config(build.flag(objective={"unit": "user", "credit_window": 60})))
    f = snap.flags["btn"]
    assert f.user_unit and f.binary and f.credit_window == 60.0 and f.direction == "maximize"


def test_killed_state_and_single_variant(build: Any) -> None:
    snap = parse_config(
        build.config(
            build.flag("k", state="killed"),
            build.flag(
                "one",
                variants=[{"key": "only", "value": None}],
                control="only",
                weights=[1.0],
                table=[[0, 10_000]],
            ),
        )
    )
    assert snap.flags["k"].killed
    assert snap.flags["one"].keys == ("only",)


def _mutate(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(payload: dict[str, Any]) -> None:
        target: Any = payload
        for p in path[:-1]:
            target = target[p]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return apply


_DELETE = object()

BAD: list[tuple[str, list[Any], Any, str]] = [
    ("schema missing", ["schema"], _DELETE, "schema"),
    ("schema 2", ["schema"], 2, "schema"),
    ("schema str", ["schema"], "1", "schema"),
    ("revision negative", ["revision"], -1, "revision"),
    ("revision float", ["revision"], 1.5, "revision"),
    ("revision bool", ["revision"], True, "revision"),
    ("flags not list", ["flags"], {"btn": {}}, "flags"),
    ("flag not object", ["flags", 0], "btn", "flags[0]"),
    ("key uppercase", ["flags", 0, "key"], "Btn", "flags[0].key"),
    ("key colon", ["flags", 0, "key"], "a:b", "flags[0].key"),
    ("key too long", ["flags", 0, "key"], "a" * 65, "flags[0].key"),
    ("salt int", ["flags", 0, "salt"], 5, "flags[0].salt"),
    ("state bad", ["flags", 0, "state"], "paused", "flags[0].state"),
    ("exploration > 1", ["flags", 0, "exploration"], 1.5, "flags[0].exploration"),
    ("exploration nan", ["flags", 0, "exploration"], float("nan"), "flags[0].exploration"),
    ("exploration str", ["flags", 0, "exploration"], "1", "flags[0].exploration"),
    ("version 0", ["flags", 0, "version"], 0, "flags[0].version"),
    ("version str", ["flags", 0, "version"], "3", "flags[0].version"),
    ("variants empty", ["flags", 0, "variants"], [], "flags[0].variants"),
    (
        "variants 101",
        ["flags", 0, "variants"],
        [{"key": f"v{i}", "value": i} for i in range(101)],
        "flags[0].variants",
    ),
    ("variant plain string", ["flags", 0, "variants", 1], "b", "flags[0].variants[1]"),
    ("variant key bad", ["flags", 0, "variants", 1, "key"], "-b", "flags[0].variants[1].key"),
    ("variant dup", ["flags", 0, "variants", 1, "key"], "a", "flags[0].variants[1].key"),
    ("variant no value", ["flags", 0, "variants", 1, "value"], _DELETE, "flags[0].variants[1].value"),
    ("control unknown", ["flags", 0, "control"], "zzz", "flags[0].control"),
    ("control missing", ["flags", 0, "control"], _DELETE, "flags[0].control"),
    ("weights short", ["flags", 0, "weights"], [1.0], "flags[0].weights"),
    ("weights negative", ["flags", 0, "weights"], [1.5, -0.5], "flags[0].weights[1]"),
    ("table missing", ["flags", 0, "table"], _DELETE, "flags[0].table"),
    ("table short", ["flags", 0, "table"], [[0, 5000], [1, 4999]], "flags[0].table"),
    ("table long", ["flags", 0, "table"], [[0, 5000], [1, 5001]], "flags[0].table"),
    ("table arm out of range", ["flags", 0, "table"], [[0, 5000], [2, 5000]], "flags[0].table[1]"),
    ("table negative run", ["flags", 0, "table"], [[0, 10001], [1, -1]], "flags[0].table"),
    ("table pair shape", ["flags", 0, "table"], [[0, 5000, 1], [1, 5000]], "flags[0].table[0]"),
    ("table float run", ["flags", 0, "table"], [[0, 5000.0], [1, 5000]], "flags[0].table[0]"),
    ("table bool arm", ["flags", 0, "table"], [[False, 5000], [1, 5000]], "flags[0].table[0]"),
    ("objective missing", ["flags", 0, "objective"], _DELETE, "flags[0].objective"),
    ("objective reward", ["flags", 0, "objective", "reward"], "ternary", "flags[0].objective.reward"),
    ("objective unit", ["flags", 0, "objective", "unit"], "session", "flags[0].objective.unit"),
    ("objective direction", ["flags", 0, "objective", "direction"], "up", "flags[0].objective.direction"),
    ("credit window 0", ["flags", 0, "objective", "credit_window"], 0, "flags[0].objective.credit_window"),
]


@pytest.mark.parametrize(("name", "path", "value", "where"), BAD, ids=[b[0] for b in BAD])
def test_bad_payload_names_the_field(build: Any, name: str, path: list[Any], value: Any, where: str) -> None:
    payload = copy.deepcopy(build.config())
    _mutate(path, value)(payload)
    with pytest.raises(ConfigError) as info:
        parse_config(payload)
    assert info.value.path == where, str(info.value)


@pytest.mark.parametrize("payload", [None, [], "config", 42, b"{}"])
def test_non_object_payload(payload: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(payload)
    assert info.value.path == ""


def test_duplicate_flag_and_later_index(build: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(build.config(build.flag("x"), build.flag("y"), build.flag("x")))
    assert info.value.path == "flags[2].key"
    with pytest.raises(ConfigError) as info:
        parse_config(build.config(build.flag("x"), build.flag("y"), build.flag("z", table=[[0, 1]])))
    assert info.value.path == "flags[2].table"
