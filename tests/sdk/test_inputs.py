"""Caller input normalisation, and every module's docstring examples (doctest)."""

from __future__ import annotations

import doctest
import enum
import importlib

import pytest

from banditflags import Decision, Reason
from banditflags._bucketing import arm_of
from banditflags._config import parse_config
from banditflags._inputs import reward_item, unit_key


class StrId(str):
    pass


class Color(enum.IntEnum):
    RED = 7


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("u1", "u1"),
        ("", None),
        (0, "0"),
        (-12, "-12"),
        (10**25, str(10**25)),
        (True, None),
        (False, None),
        (None, None),
        (1.0, None),
        (b"u1", None),
        (StrId("abc"), "abc"),
        (Color.RED, "7"),
        (["u"], None),
    ],
)
def test_unit_key(value: object, key: str | None) -> None:
    got = unit_key(value)
    assert got == key
    assert got is None or type(got) is str


def test_reward_item_shapes(build: object) -> None:
    flags = parse_config(build.config()).flags  # type: ignore[attr-defined]
    f = flags["btn"]
    got = reward_item(flags, "btn", 5, 1)  # by unit, never served: bucketed now, pseudo decision id
    assert got is not None and got[0] is f and got[1] == ("btn", None, 1, arm_of(f.table, f.salt, "5"))
    assert got[2] is not None and len(got[2]) == 16 and got[3:] == (1.0, None)
    assert f.units.on  # from now on the flag remembers its units' decisions
    assert reward_item(flags, "bf1:btn:1:1", None, 0) == (f, ("btn", None, 1, 1), None, 0.0, None)
    tok = "bf2:btn:1:1:00000000000000aa"
    assert reward_item(flags, tok, None, 1) == (f, ("btn", None, 1, 1), "00000000000000aa", 1.0, None)
    d = Decision("btn", "b", "B", Reason.SPLIT, 1, 1, 0.5, decision_id="00000000000000bb")
    assert reward_item(flags, d, "u9", 1.0) == (f, ("btn", None, 1, 1), "00000000000000bb", 1.0, None)
    assert reward_item(flags, d, "u9", 7.0, "latency") == (
        f,
        ("btn", None, 1, 1),
        "00000000000000bb",
        7.0,
        "latency",
    )
    assert reward_item(flags, d, "", 1.0) is None
    assert reward_item(flags, "btn", None, 1.0) is None
    assert reward_item(flags, d, None, 0.5) is None  # binary: 0 or 1
    # the rule a decision was served by goes with it (a Decision's field, a token's /rule)
    d = Decision("btn", "b", "B", Reason.SPLIT, 7, 1, 1.0, decision_id="00000000000000cc", rule="target")
    assert reward_item(flags, d, "u9", 1.0) == (f, ("btn", "target", 7, 1), "00000000000000cc", 1.0, None)
    assert reward_item(flags, d.token, None, 1.0) == (
        f,
        ("btn", "target", 7, 1),
        "00000000000000cc",
        1.0,
        None,
    )
    assert reward_item(flags, "bf1:btn/us:1:1", None, 0) == (f, ("btn", "us", 1, 1), None, 0.0, None)


def test_reward_by_unit_goes_to_the_remembered_decision_within_the_window(build: object) -> None:
    flags = parse_config(build.config(build.flag(objective={"credit_window": 100}))).flags  # type: ignore[attr-defined]
    f = flags["btn"]
    f.units.put("alice", (1, 1 - arm_of(f.table, f.salt, "alice"), 0.0, 0xAB, None))  # served the other arm
    got = reward_item(flags, "btn", "alice", 1.0, None, 50.0)
    assert got is not None and got[1][3] != arm_of(f.table, f.salt, "alice") and got[2] == f"{0xAB:016x}"
    later = reward_item(flags, "btn", "alice", 1.0, None, 101.0)  # the window is over: bucketing now
    assert later is not None and later[1][3] == arm_of(f.table, f.salt, "alice")


def test_reward_by_unit_of_a_killed_flag_without_memory_is_rejected(build: object) -> None:
    flags = parse_config(build.config(build.flag(state="killed"))).flags  # type: ignore[attr-defined]
    assert reward_item(flags, "btn", "carol", 1.0) is None


@pytest.mark.parametrize(
    "module",
    [
        "_bucketing",
        "_client",
        "_config",
        "_events",
        "_exceptions",
        "_inputs",
        "_lifecycle",
        "_models",
        "_runtime",
        "_sse",
        "_sync",
        "_token",
    ],
)
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(f"banditflags.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
