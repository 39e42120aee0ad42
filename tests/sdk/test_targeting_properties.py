"""Properties of targeting (hypothesis): clauses never raise, negation is exact except for missing
attributes, a list matches if any element does, SemVer order is §11's, clause order is irrelevant, and
fixed splits build the server's table."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banditflags._bucketing import TABLE_SIZE, table_from_weights
from banditflags._operators import Clause, attribute_clause
from banditflags._semver import parse_semver
from banditflags._targeting import FlagTargeting, compile_flag, compile_segments

# One clause per operator, on attribute "x", with values that make every path reachable.
OPERATOR_CLAUSES: list[tuple[str, list[Any] | None]] = [
    ("in", ["us", "", 3, 2.5, True, False, 0]),
    ("starts_with", ["a", "1"]),
    ("ends_with", ["z", "0"]),
    ("contains", ["b"]),
    ("contains", ["b", "é", "."]),
    ("matches", ["^a", "[0-9]$"]),
    ("lt", [3]),
    ("lte", [2.5]),
    ("gt", [-1]),
    ("gte", [0]),
    ("semver_eq", ["1.0.0"]),
    ("semver_lt", ["1.0.0-beta"]),
    ("semver_lte", ["1.1.0"]),
    ("semver_gt", ["0.9.0"]),
    ("semver_gte", ["1.0.0-rc.1"]),
    ("before", ["2024-01-01T00:00:00Z"]),
    ("after", [0, "1999-12-31T23:00:00-05:00"]),
    ("exists", None),
]
CLAUSES = [(op, values, attribute_clause("x", op, values, False)) for op, values in OPERATOR_CLAUSES]
NEGATED = [attribute_clause("x", op, values, True) for op, values in OPERATOR_CLAUSES]

semverish = st.from_regex(r"\Av?[0-9]{1,2}(\.[0-9]{1,2}){0,3}(-[0-9A-Za-z.-]{0,6})?(\+[a-z0-9]{0,3})?\Z")
isoish = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?\Z"
)
zones = st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5, minutes=-30))])
scalars = st.one_of(
    st.text(max_size=12),
    semverish,
    isoish,
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=4),
    st.datetimes(timezones=zones),
    st.dates(),
    st.just(object()),
    st.just(1j),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=2)
        | st.frozensets(st.one_of(st.text(max_size=3), st.integers(), st.booleans()), max_size=3)
    ),
    max_leaves=8,
)
list_elements = st.one_of(
    st.text(max_size=6), semverish, isoish, st.integers(-5, 5), st.floats(-5, 5), st.booleans()
)


def is_missing(v: Any) -> bool:
    """docs/targeting.md: absent, None, NaN, or a type that is neither a scalar nor a list."""
    if v is None:
        return True
    if isinstance(v, (list, tuple, set, frozenset)):
        return False
    if isinstance(v, float) and math.isnan(v):
        return True
    return not isinstance(v, (str, int, float, dt.date))


def check(clause: Clause, value: Any) -> bool:
    result = clause("u", {"x": value})
    assert result is True or result is False
    return result


@given(values)
def test_clauses_never_raise_and_answer_a_bool(value: Any) -> None:
    for _, _, clause in CLAUSES:
        check(clause, value)


@given(st.dictionaries(st.sampled_from(["x", "y", "plan", "age"]), values, max_size=4), st.text(max_size=8))
def test_evaluation_never_raises(attributes: dict[str, Any], unit_id: str) -> None:
    segments = compile_segments(
        [{"key": "s", "included": ["a"], "clauses": [{"attribute": "y", "op": "exists"}]}]
    )
    rules = [
        {"id": f"r{i}", "clauses": [{"attribute": "x", "op": op, "values": vals}], "serve": {"variant": "b"}}
        for i, (op, vals) in enumerate(OPERATOR_CLAUSES)
    ]
    rules.append(
        {"id": "seg", "clauses": [{"op": "in_segment", "values": ["s"]}], "serve": {"weights": [1, 2]}}
    )
    flag = {"targets": [{"variant": "a", "units": ["t"]}], "rules": rules}
    t = compile_flag(flag, ["a", "b"], segments)
    assert isinstance(t, FlagTargeting)
    m = t.evaluate(unit_id, attributes)
    assert m is None or m in t.rules or m.rule == "target"


@given(values)
def test_negate_inverts_exactly_except_for_missing_attributes(value: Any) -> None:
    for (op, _, clause), negated in zip(CLAUSES, NEGATED, strict=True):
        pos, neg = check(clause, value), check(negated, value)
        if op == "exists":  # the one operator about presence: its negation is exact
            assert pos is not is_missing(value) and neg is not pos
        elif is_missing(value):
            assert pos is False and neg is False, op
        else:
            assert neg is not pos, op


@given(st.lists(list_elements, max_size=5), st.sampled_from(["list", "tuple", "set"]))
def test_a_list_matches_if_any_element_does(elements: list[Any], kind: str) -> None:
    container = {"list": list, "tuple": tuple, "set": set}[kind](elements)
    for (op, _, clause), negated in zip(CLAUSES, NEGATED, strict=True):
        if op == "exists":
            continue
        expected = any(check(clause, e) for e in container)
        assert check(clause, container) is expected, op
        assert check(negated, container) is not expected, op


@given(st.lists(st.sampled_from(["us", "ca", "fr", 1, 1.0, True, 0, False, 2.5, ""]), max_size=5))
def test_in_with_a_list_is_any_element_in_the_values(elements: list[Any]) -> None:
    vals = ["us", "", 1, True]
    clause = attribute_clause("x", "in", vals, False)
    in_values = [
        any(type(e) is type(v) or {type(e), type(v)} <= {int, float} for v in vals if v == e)
        for e in elements
    ]
    assert clause("u", {"x": elements}) is any(in_values)


# -- SemVer §11 -----------------------------------------------------------------------------------

idents = st.one_of(
    st.integers(0, 12).map(str), st.sampled_from(["alpha", "beta", "rc", "a", "b", "A", "x-y", "0a", "-"])
)
versions = st.tuples(
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(idents, max_size=3),
    st.sampled_from(["", "+b.1", "+0"]),
)


def text_of(v: tuple[int, int, int, list[str], str]) -> str:
    major, minor, patch, pre, build = v
    return f"{major}.{minor}.{patch}" + ("-" + ".".join(pre) if pre else "") + build


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def reference_cmp(a: tuple[int, int, int, list[str], str], b: tuple[int, int, int, list[str], str]) -> int:
    """SemVer 2.0.0 §11, step by step (build metadata ignored)."""
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    pa, pb = a[3], b[3]
    if pa == pb:
        return 0
    if not pa or not pb:
        return 1 if not pa else -1  # a release is above its pre-releases
    for x, y in zip(pa, pb, strict=False):  # the common prefix
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return sign(int(x) - int(y))
        if x.isdigit() or y.isdigit():
            return -1 if x.isdigit() else 1  # numeric identifiers have lower precedence
        return -1 if x < y else 1  # ASCII order
    return sign(len(pa) - len(pb))


@given(versions, versions)
def test_semver_order_is_semver_11(a: Any, b: Any) -> None:
    ka, kb = parse_semver(text_of(a)), parse_semver(text_of(b))
    assert ka is not None and kb is not None
    assert sign((ka > kb) - (ka < kb)) == reference_cmp(a, b)
    expected = reference_cmp(a, b)
    for op, holds in [
        ("semver_lt", expected < 0),
        ("semver_lte", expected <= 0),
        ("semver_gt", expected > 0),
    ]:
        assert attribute_clause("x", op, [text_of(b)], False)("u", {"x": text_of(a)}) is holds
    for op, holds in [("semver_gte", expected >= 0), ("semver_eq", expected == 0)]:
        assert attribute_clause("x", op, [text_of(b)], False)("u", {"x": text_of(a)}) is holds


@given(st.lists(versions, min_size=2, max_size=8))
def test_semver_sorting_is_a_total_order(vs: list[Any]) -> None:
    ordered = sorted(vs, key=lambda v: parse_semver(text_of(v)))
    for x, y in itertools.pairwise(ordered):
        assert reference_cmp(x, y) <= 0


@pytest.mark.parametrize(
    "text", ["1.0.0-01", "1.0.0-", "1.0.0+", "1..0", "1.0.0-a..b", "1.0.0 ", "١.٢.٣", "1.0.0-é"]
)
def test_not_versions(text: str) -> None:
    assert parse_semver(text) is None


# -- rules ----------------------------------------------------------------------------------------


@given(
    st.permutations(range(4)),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), list_elements, max_size=4),
)
def test_clause_order_does_not_change_the_outcome(order: list[int], attributes: dict[str, Any]) -> None:
    clauses = [
        {"attribute": "a", "op": "matches", "values": ["[a-m]"]},
        {"attribute": "b", "op": "exists", "negate": True},
        {"attribute": "c", "op": "lt", "values": [2]},
        {"attribute": "d", "op": "in", "values": [True, "x"], "negate": True},
    ]
    one = compile_flag({"rules": [{"id": "r", "clauses": clauses, "serve": {"variant": "a"}}]}, ["a"])
    other = compile_flag(
        {"rules": [{"id": "r", "clauses": [clauses[i] for i in order], "serve": {"variant": "a"}}]}, ["a"]
    )
    assert isinstance(one, FlagTargeting) and isinstance(other, FlagTargeting)
    m1, m2 = one.evaluate("u", attributes), other.evaluate("u", attributes)
    assert (m1 is None) == (m2 is None)
    expected = (
        isinstance(attributes.get("a"), str)
        and re.search("[a-m]", attributes["a"]) is not None
        and "b" not in attributes
        and type(attributes.get("c")) in (int, float)
        and attributes["c"] < 2
        and "d" in attributes
        and attributes["d"] not in ("x",)
        and attributes["d"] is not True
    )
    assert (m1 is not None) == expected


@given(st.lists(st.one_of(st.integers(0, 10**6), st.floats(0, 1e6), st.just(0.0)), min_size=1, max_size=12))
def test_fixed_split_tables_match_the_server(weights: list[float]) -> None:
    allocation = pytest.importorskip("banditflags_server.engine.allocation")
    if not any(weights):
        weights = [*weights[:-1], 1]
    table = table_from_weights(weights)
    assert len(table) == TABLE_SIZE
    assert table == allocation.initial_table(allocation.target_counts(weights))
