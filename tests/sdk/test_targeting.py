"""Targeting compiler and evaluator: the API, Python-only attribute types, errors, limits, segments.

The cross-SDK semantics (every operator, negation, lists, missing attributes) are in the golden
vectors (test_rules_vectors.py); this module covers what JSON cannot express and the compiler's API.
"""

from __future__ import annotations

import datetime as dt
import doctest
import enum
import importlib
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from banditflags._bucketing import TABLE_SIZE, bucket_of, table_counts
from banditflags._operators import MAX_SUBJECT_LENGTH, MAX_VALUES, attribute_clause
from banditflags._segments import MAX_SEGMENT_DEPTH
from banditflags._targeting import (
    MAX_RULES,
    NO_SEGMENTS,
    FlagTargeting,
    Match,
    TargetingError,
    compile_flag,
    compile_segments,
)

VARIANTS = ["control", "green", "blue"]


def one_rule(*clauses: dict[str, Any], **serve: Any) -> dict[str, Any]:
    return {"rules": [{"id": "r", "clauses": list(clauses), "serve": serve or {"variant": "green"}}]}


def compiled(flag: Mapping[str, Any], segments: Any = NO_SEGMENTS, **kw: Any) -> FlagTargeting:
    t = compile_flag(flag, VARIANTS, segments, **kw)
    assert isinstance(t, FlagTargeting), t
    return t


def matches(op: str, values: Any, value: Any, negate: bool = False) -> bool:
    return attribute_clause("x", op, values, negate)("u", {"x": value})


# -- API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["_targeting", "_segments", "_clauses", "_operators", "_semver", "_timestamps"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"banditflags.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(
    "flag", [{}, {"rules": [], "targets": []}, {"rules": None}, {"key": "f", "salt": "s"}]
)
def test_a_flag_without_rules_or_targets_compiles_to_none(flag: dict[str, Any]) -> None:
    assert compile_flag(flag, VARIANTS) is None


def test_evaluate_returns_prebuilt_matches_without_allocating() -> None:
    t = compiled(one_rule({"attribute": "plan", "op": "in", "values": ["pro"]}, weights=[1, 1, 0]))
    a = t.evaluate("u1", {"plan": "pro"})
    b = t.evaluate("u2", {"plan": "pro"})
    assert a is b is t.rules[0]
    assert a.table is not None and len(a.table) == TABLE_SIZE
    assert table_counts(a.table, 3) == (5000, 5000, 0)
    assert "table" not in repr(a)  # 10,000 bytes never end up in a log line


def test_targets_only_flag_ignores_attributes() -> None:
    t = compiled({"targets": [{"variant": "blue", "units": ["alice"]}]})
    assert t.evaluate("alice", None) == Match("target", -1, "target", variant=2)
    assert t.evaluate("bob", {"anything": 1}) is None
    assert t.targets == 1 and t.rules == ()


def test_bandit_rules_take_their_table_from_rule_tables() -> None:
    flag = one_rule({"attribute": "p", "op": "exists"}, bandit=True)
    table = bytes([2]) * TABLE_SIZE
    assert compiled(flag).rules[0].table is None  # not wired: the caller supplies the table
    m = compiled(flag, rule_tables={"r": table}).evaluate("u", {"p": 1})
    assert m is not None and m.serve == "bandit" and m.table is table
    for tables in ({}, {"r": b"\x00" * 10}, {"r": "not bytes"}):
        err = compile_flag(flag, VARIANTS, rule_tables=tables)  # type: ignore[arg-type]
        assert isinstance(err, TargetingError) and err.path == "rules[0].serve.bandit"


def test_fixed_split_buckets_like_the_default_allocation() -> None:
    t = compiled(one_rule({"attribute": "c", "op": "in", "values": ["us"]}, weights=[0.25, 0.25, 0.5]))
    table = t.rules[0].table
    assert table is not None and table_counts(table, 3) == (2500, 2500, 5000)
    assert table[:2500] == b"\x00" * 2500 and table[-5000:] == b"\x02" * 5000  # runs in arm order
    assert table[bucket_of("salt", "u1")] in (0, 1, 2)


def test_errors_are_values_with_a_path_and_a_message() -> None:
    err = compile_flag(one_rule({"attribute": "x", "op": "regex", "values": ["a"]}), VARIANTS)
    assert isinstance(err, TargetingError)
    assert err.path == "rules[0].clauses[0].op"
    assert "unknown operator 'regex'" in err.message and "matches" in err.message
    assert str(err) == f"{err.path}: {err.message}"


@pytest.mark.parametrize(
    "flag",
    [
        "not a mapping",
        {"rules": "x"},
        {"rules": [None]},
        {"rules": [{"id": "r", "clauses": [7], "serve": {"variant": "green"}}]},
        {"rules": [{"id": 7}]},
        {"rules": [{"id": "r", "clauses": [{"op": None}]}]},
        {"targets": [{"variant": ["green"], "units": ["u"]}]},
        {"targets": [{"variant": "green", "units": "alice"}]},
        {"rules": [{"id": "r", "clauses": [{"attribute": "x", "op": "in", "values": [10**400]}]}]},
        {"rules": [{"id": "r", "clauses": [{"attribute": "x", "op": "gt", "values": [math.inf]}]}]},
        {"rules": [{"id": "r", "clauses": [{"attribute": "x", "op": "in", "values": ["a"]}], "serve": []}]},
        {"rules": [{"id": "r", "clauses": [{"attribute": "x", "op": "in", "values": ["a"]}], "serve": {}}]},
        one_rule({"attribute": "x", "op": "in", "values": ["a"]}, weights=[10**400, 1, 1]),
        one_rule({"attribute": "x", "op": "in", "values": ["a"]}, weights=[math.nan, 1, 1]),
    ],
)
def test_garbage_compiles_to_an_error_never_an_exception(flag: Any) -> None:
    assert isinstance(compile_flag(flag, VARIANTS), TargetingError)


def test_limits() -> None:
    clause = {"attribute": "x", "op": "in", "values": ["a"]}
    rules = [
        {"id": f"r{i}", "clauses": [clause], "serve": {"variant": "green"}} for i in range(MAX_RULES + 1)
    ]
    err = compile_flag({"rules": rules}, VARIANTS)
    assert isinstance(err, TargetingError) and err.path == "rules"
    err = compile_flag(one_rule({**clause, "values": ["v"] * (MAX_VALUES + 1)}), VARIANTS)
    assert isinstance(err, TargetingError) and err.path == "rules[0].clauses[0].values"
    err = compile_flag(one_rule({**clause, "attribute": "a" * 257}), VARIANTS)
    assert isinstance(err, TargetingError) and err.path == "rules[0].clauses[0].attribute"


# -- attribute values only Python can pass --------------------------------------------------------


class Plan(str, enum.Enum):
    PRO = "pro"


class Level(enum.IntEnum):
    HIGH = 9


class Weird:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no")

    __hash__ = object.__hash__


@pytest.mark.parametrize(
    ("op", "values", "value", "expected"),
    [
        ("in", ["pro"], Plan.PRO, True),  # str subclasses count as their value
        ("starts_with", ["pr"], Plan.PRO, True),
        ("gt", [5], Level.HIGH, True),
        ("in", [9], Level.HIGH, True),
        ("in", ["us"], ("fr", "us"), True),  # tuples, sets and frozensets are lists
        ("in", ["us"], {"us"}, True),
        ("lt", [1], frozenset({0.5}), True),
        ("in", [1], (True,), False),
        ("after", ["2024-01-01T00:00:00Z"], dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc), True),
        ("after", ["2024-01-01T00:00:00Z"], dt.datetime(2024, 1, 1, 0, 0, 1), True),  # naive means UTC
        ("before", ["2024-01-01T00:00:00+01:00"], dt.datetime(2024, 1, 1, 0, 0), False),  # 00:00Z is later
        ("before", ["2024-01-02"], dt.date(2024, 1, 1), True),
        ("after", [0], 10**400, True),  # an int too large for a float still compares exactly
        ("lt", [0], -(10**400), True),
        ("lt", [1e308], math.inf, False),
        ("gt", [1e308], math.inf, True),
    ],
)
def test_python_values(op: str, values: list[Any], value: Any, expected: bool) -> None:
    assert matches(op, values, value) is expected


@pytest.mark.parametrize("value", [math.nan, b"us", bytearray(b"us"), {"us": 1}, object(), Weird(), None, 1j])
@pytest.mark.parametrize(("op", "values"), [("in", ["us"]), ("lt", [5]), ("contains", ["u"]), ("after", [0])])
def test_values_that_are_not_values_are_missing(op: str, values: list[Any], value: Any) -> None:
    assert matches(op, values, value) is False
    assert matches(op, values, value, negate=True) is False
    assert matches("exists", None, value) is False
    assert matches("exists", None, value, negate=True) is True


@pytest.mark.parametrize("value", [dt.datetime(2024, 1, 1), [math.nan, b"x"], 3, True])
def test_present_values_of_the_wrong_type_do_not_match_but_negate(value: Any) -> None:
    assert matches("in", ["us"], value) is False
    assert matches("in", ["us"], value, negate=True) is True


class Exploding(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize("attributes", [None, [("plan", "pro")], "plan=pro", 42, Exploding()])
def test_evaluate_never_raises_on_bad_attributes(attributes: Any) -> None:
    t = compiled({**one_rule({"attribute": "plan", "op": "exists", "negate": True}), "targets": []})
    m = t.evaluate("u", attributes)
    assert m is None or m.rule == "r"  # not a mapping: no attributes, so "plan does not exist" matches


def test_evaluate_never_raises_on_bad_unit_ids() -> None:
    t = compiled(
        {"targets": [{"variant": "green", "units": ["1"]}], **one_rule({"attribute": "x", "op": "exists"})}
    )
    for unit in (1, None, ["1"], {"1": 1}):
        assert t.evaluate(unit, {}) is None  # type: ignore[arg-type]


def test_a_mapping_other_than_dict_is_read() -> None:
    from types import MappingProxyType

    t = compiled(one_rule({"attribute": "plan", "op": "in", "values": ["pro"]}))
    assert t.evaluate("u", MappingProxyType({"plan": "pro"})) is t.rules[0]


# -- regular expressions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "^(\\w+\\s?)*$", "(a|b*)*c", "(x{1,3}){2,9}", "((ab)*c)+", "(?:a?)+", "(?=(a+)+)b"],
)
def test_nested_repeats_are_rejected(pattern: str) -> None:
    err = compile_flag(one_rule({"attribute": "x", "op": "matches", "values": [pattern]}), VARIANTS)
    assert isinstance(err, TargetingError) and "nested repeats" in err.message


@pytest.mark.parametrize(
    "pattern",
    ["^[a-z]+@corp\\.test$", "(\\d{3})+", "(ab|cd)*", "^v?(\\d+)\\.(\\d+)$", "(\\.\\d+)?", "a{2}b*"],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert isinstance(
        compile_flag(one_rule({"attribute": "x", "op": "matches", "values": [pattern]}), VARIANTS),
        FlagTargeting,
    )


@pytest.mark.skipif(not hasattr(re, "NOFLAG"), reason="possessive repeats and atomic groups need Python 3.11")
@pytest.mark.parametrize("pattern", ["(?:[a-z]++\\.)+com$", "(?>a+)+b"])
def test_possessive_and_atomic_groups_reset_the_check(pattern: str) -> None:
    assert isinstance(
        compile_flag(one_rule({"attribute": "x", "op": "matches", "values": [pattern]}), VARIANTS),
        FlagTargeting,
    )


def test_matches_bounds_the_subject_length() -> None:
    assert matches("matches", ["b$"], "a" * (MAX_SUBJECT_LENGTH - 1) + "b") is True
    assert matches("matches", ["b$"], "a" * MAX_SUBJECT_LENGTH + "b") is False
    assert matches("matches", ["b$"], "a" * MAX_SUBJECT_LENGTH + "b", negate=True) is True


def test_a_rejected_pattern_costs_no_backtracking() -> None:
    start = time.perf_counter()
    compile_flag(one_rule({"attribute": "x", "op": "matches", "values": ["^(a|aa)+(b+)+$"]}), VARIANTS)
    assert time.perf_counter() - start < 1.0  # checked statically, never run against a probe


# -- segments -------------------------------------------------------------------------------------


def test_a_segment_is_compiled_once_and_shared() -> None:
    segments = compile_segments(
        [{"key": "pro", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}]}]
    )
    clause = {"op": "in_segment", "values": ["pro"]}
    a, b = compiled(one_rule(clause), segments), compiled(one_rule(clause), segments)
    assert a.evaluate("u", {"plan": "pro"}) is not None and b.evaluate("u", {"plan": "pro"}) is not None
    assert list(segments.matchers) == ["pro"]


def test_segment_problems_are_reported_and_only_their_users_fail() -> None:
    segments = compile_segments(
        [
            {"key": "ok", "included": ["u"]},
            {"key": "bad", "clauses": [{"attribute": "x", "op": "lt", "values": ["1"]}]},
            {"key": "ok", "included": ["v"]},
            {"key": "Bad Key"},
            "nope",
        ]
    )
    assert [p.path for p in segments.problems] == [
        "segments[1].clauses[0].values[0]",
        "segments[2].key",
        "segments[3].key",
        "segments[4]",
    ]
    assert set(segments.errors) == {"bad", "ok"}  # a duplicated key is unusable: which one was meant?
    err = compile_flag(one_rule({"op": "in_segment", "values": ["bad"]}), VARIANTS, segments)
    assert isinstance(err, TargetingError) and "segments[1].clauses[0].values[0]" in err.message
    assert isinstance(
        compile_flag(one_rule({"attribute": "x", "op": "exists"}), VARIANTS, segments), FlagTargeting
    )


@pytest.mark.parametrize("raw", ["segments", 7, {"key": "x"}])
def test_segments_that_are_not_a_list(raw: Any) -> None:
    segments = compile_segments(raw)
    assert [p.path for p in segments.problems] == ["segments"] and not segments.matchers


@pytest.mark.parametrize("order", [1, -1])
def test_segments_nest_to_a_bounded_depth(order: int) -> None:
    def chain(n: int) -> list[dict[str, Any]]:
        segs = [{"key": "s0", "included": ["u"]}]
        segs += [
            {"key": f"s{i}", "clauses": [{"op": "in_segment", "values": [f"s{i - 1}"]}]} for i in range(1, n)
        ]
        return segs[::order]  # compiled in config order: the named segment first, or last

    top = f"s{MAX_SEGMENT_DEPTH - 1}"
    ok = compile_segments(chain(MAX_SEGMENT_DEPTH))
    assert ok.problems == () and ok.matchers[top]("u", {}) and not ok.matchers[top]("v", {})
    deep = compile_segments(chain(MAX_SEGMENT_DEPTH + 1))
    assert set(deep.errors) == {f"s{MAX_SEGMENT_DEPTH}"}
    assert "nested more than" in str(deep.errors[f"s{MAX_SEGMENT_DEPTH}"])
