"""Clauses typed on the command line (``--clause 'country in DE,AT'``): what they read as, the errors,
and that what ``show`` prints reads back as the same clause (a property over arbitrary values)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from banditflags_server.cli.clauses import ClauseSyntaxError, format_clause, format_serve, parse_clause


@pytest.mark.parametrize(
    ("typed", "clause"),
    [
        ("country in DE,AT,CH", {"attribute": "country", "op": "in", "values": ["DE", "AT", "CH"]}),
        ("plan != free", {"attribute": "plan", "op": "in", "values": ["free"], "negate": True}),
        ("plan not != free", {"attribute": "plan", "op": "in", "values": ["free"]}),
        ("age < 18", {"attribute": "age", "op": "lt", "values": [18]}),
        ("score > 0.5", {"attribute": "score", "op": "gt", "values": [0.5]}),
        ('build in "7", "a,b"', {"attribute": "build", "op": "in", "values": ["7", "a,b"]}),
        ('tags in ["x, y", 3]', {"attribute": "tags", "op": "in", "values": ["x, y", 3]}),
        ("signup after 2026-01-01", {"attribute": "signup", "op": "after", "values": ["2026-01-01"]}),
        ("signup before 1767225600", {"attribute": "signup", "op": "before", "values": [1767225600]}),
        ("v semver_gte 2.1.0", {"attribute": "v", "op": "semver_gte", "values": ["2.1.0"]}),
        ("id starts_with 1", {"attribute": "id", "op": "starts_with", "values": ["1"]}),
        ("beta not exists", {"attribute": "beta", "op": "exists", "values": [], "negate": True}),
        ("not in_segment a,b", {"op": "in_segment", "values": ["a", "b"], "negate": True}),
        ("age lt ten", {"attribute": "age", "op": "lt", "values": ["ten"]}),  # the server names it
    ],
)
def test_what_a_typed_clause_reads_as(typed: str, clause: dict[str, Any]) -> None:
    assert parse_clause(typed) == clause


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "empty clause"),
        ("country", "expected 'ATTRIBUTE [not] OP VALUE,...'"),
        ("country not", "expected"),
        ("country in_segment beta", "in_segment takes no attribute"),
        ("not country in DE", "(not after the attribute)"),
        ("tags in [1", "not a JSON list"),
        ("tags in [", "not a JSON list"),
        ('name in "unterminated', "not a JSON string"),
    ],
)
def test_what_cannot_be_read_says_what_was_expected(typed: str, message: str) -> None:
    with pytest.raises(ClauseSyntaxError, match=re.escape(message)):
        parse_clause(typed)


SCALARS = st.one_of(
    st.text(min_size=1, max_size=12),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
)


@given(
    op=st.sampled_from(["in", "starts_with", "matches", "lt", "after", "semver_lt"]),
    values=st.lists(SCALARS, min_size=1, max_size=5),
    negate=st.booleans(),
)
@example(op="in", values=['0"', "0"], negate=False)  # a quote inside a value opened a quoted item
def test_what_is_printed_reads_back_as_the_same_clause(op: str, values: list[Any], negate: bool) -> None:
    clause: dict[str, Any] = {"attribute": "attr", "op": op, "values": values}
    if negate:
        clause["negate"] = True
    assert parse_clause(format_clause(clause)) == clause


def test_what_a_rule_serves() -> None:
    assert format_serve({"variant": "green"}, ["blue", "green"]) == "green"
    assert format_serve({"weights": [0.5, 0.5, 0]}, ["a", "b", "c"]) == "split a=50% b=50% c=0%"
    assert format_serve({"bandit": True}, ["a", "b"]) == "its own bandit"
