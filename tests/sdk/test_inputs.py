"""Caller input normalisation, and every module's docstring examples (doctest)."""

from __future__ import annotations

import doctest
import enum
import importlib

import pytest

from banditflags import Decision, Reason
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
    assert reward_item(flags, "btn", 5, 1) == ("u", "btn", "5", 1.0)
    assert reward_item(flags, "bf1:btn:1:1", None, 0) == ("t", "btn", 1, 1, None, None, 0.0)
    assert reward_item(flags, "bf1:btn/us:1:1", None, 0) == ("t", "btn", 1, 1, "us", None, 0.0)
    d = Decision("btn", "b", "B", Reason.SPLIT, 1, 1, 0.5)
    assert reward_item(flags, d, "u9", 1.0) == ("t", "btn", 1, 1, None, "u9", 1.0)
    d = Decision("btn", "b", "B", Reason.SPLIT, 7, 1, 0.5, rule="target")
    assert reward_item(flags, d, "u9", 1.0) == ("t", "btn", 7, 1, "target", "u9", 1.0)
    assert reward_item(flags, d, "u9", 3.0, "latency") == ("t", "btn", 7, 1, "target", "u9", 3.0, "latency")
    assert reward_item(flags, d, "", 1.0) is None
    assert reward_item(flags, "btn", None, 1.0) is None


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
