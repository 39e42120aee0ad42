"""The generated evaluator (_codegen) against the closures it replaces: the same answer for every
operator, negated or not, on any value; operands never become code; large flags fall back."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import banditflags._codegen as codegen
from banditflags._operators import INLINE_KINDS, attribute_clause, inline_of
from banditflags._targeting import FlagTargeting, compile_flag, compile_segments

from .test_targeting_properties import OPERATOR_CLAUSES, values

SEGMENTS = compile_segments(
    [{"key": "s", "included": ["a"], "excluded": ["b"], "clauses": [{"attribute": "y", "op": "exists"}]}]
)


def flag_of_every_operator() -> dict[str, Any]:
    """One rule per operator and negation, two clauses each (on x, then y), a segment and targets."""
    rules: list[dict[str, Any]] = []
    for i, (op, vals) in enumerate(OPERATOR_CLAUSES):
        for negate in (False, True):
            clause = {"attribute": "x", "op": op, "values": vals, "negate": negate}
            if vals is None:
                del clause["values"]
            other = {"attribute": "y", "op": "in", "values": ["on", 1], "negate": not negate}
            rules.append({"id": f"r{i}{'n' if negate else ''}", "clauses": [clause, other]})
            rules.append({"id": f"s{i}{'n' if negate else ''}", "clauses": [clause]})
    rules.append({"id": "seg", "clauses": [{"op": "in_segment", "values": ["s"]}]})
    for r in rules:
        r["serve"] = {"variant": "b"}
    return {"targets": [{"variant": "a", "units": ["t"]}], "rules": rules}


def pair(flag: dict[str, Any]) -> tuple[FlagTargeting, FlagTargeting]:
    gen = compile_flag(flag, ["a", "b"], SEGMENTS)
    closures = compile_flag(flag, ["a", "b"], SEGMENTS, generated=False)
    assert isinstance(gen, FlagTargeting) and isinstance(closures, FlagTargeting)
    assert gen.evaluate.__name__ == "evaluate" and gen.evaluate is not closures.evaluate
    return gen, closures


EVERY = flag_of_every_operator()
# The operands of OPERATOR_CLAUSES and their neighbours, so bounds and set members come up often.
EDGES = st.sampled_from(
    [3, 2, 4, 2.5, 2.4999, -1, 0, -2, 1, True, "us", "", "a", "z", "0", "ab", "1.0.0", "on"]
)


def test_docstring_examples() -> None:
    result = doctest.testmod(codegen)
    assert result.failed == 0 and result.attempted > 0


def test_most_operators_are_written_out() -> None:
    kinds = {op: inline_of(attribute_clause("x", op, vals, False)) for op, vals in OPERATOR_CLAUSES}
    assert all(k is None or k.kind in INLINE_KINDS for k in kinds.values())
    written = {op for op, k in kinds.items() if k is not None and k.kind != "call"}
    assert {"in", "starts_with", "ends_with", "lt", "lte", "gt", "gte"} <= written
    assert kinds["exists"] is None  # called, not written out


@given(
    st.dictionaries(st.sampled_from(["x", "y"]), values | EDGES | st.lists(EDGES, max_size=3), max_size=2),
    st.sampled_from(["u", "t", "a", "b", ""]),
)
def test_generated_answers_as_the_closures_do(attributes: dict[str, Any], unit_id: str) -> None:
    gen, closures = pair(EVERY)
    # every rule alone, so each clause's answer is compared (the first match would hide the rest)
    for i, r in enumerate(EVERY["rules"]):
        one = {"rules": [r]}
        g, c = pair(one)
        assert g.evaluate(unit_id, attributes) == c.evaluate(unit_id, attributes), (i, r)
    assert gen.evaluate(unit_id, attributes) == closures.evaluate(unit_id, attributes)


@pytest.mark.parametrize("attributes", [None, {}, 3, "x", [("x", "us")], {"x": object()}])
def test_odd_attribute_containers(attributes: Any) -> None:
    gen, closures = pair(EVERY)
    assert gen.evaluate("u", attributes) == closures.evaluate("u", attributes)
    assert gen.evaluate("t", attributes).rule == "target"
    assert gen.evaluate(["unhashable"], attributes) == closures.evaluate(["unhashable"], attributes)


def test_a_mapping_that_raises_answers_the_default() -> None:
    class Broken(dict):  # type: ignore[type-arg]
        def get(self, *a: Any) -> Any:
            raise RuntimeError("boom")

    gen, _ = pair(
        {
            "rules": [
                {
                    "id": "r",
                    "clauses": [{"attribute": "x", "op": "in", "values": ["us"]}],
                    "serve": {"variant": "b"},
                }
            ]
        }
    )
    assert gen.evaluate("u", Broken(x="us")) is None


@pytest.mark.parametrize(
    "name", ['x"); import os; os._exit(3); ("', "x\nreturn M0", "{A}", "v", "__class__", "A0_0", "é 🙂"]
)
def test_attribute_names_are_operands_not_code(name: str) -> None:
    flag = {
        "rules": [
            {
                "id": "r",
                "serve": {"variant": "b"},
                "clauses": [{"attribute": name, "op": "ends_with", "values": ['") or True or ("']}],
            }
        ]
    }
    gen, _ = pair(flag)
    assert gen.evaluate("u", {name: 'z") or True or ("'}).rule == "r"
    assert gen.evaluate("u", {name: "z"}) is None
    assert gen.evaluate("u", {"x": 'z") or True or ("'}) is None


def test_a_flag_too_large_to_generate_keeps_the_closures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codegen, "MAX_GENERATED_CLAUSES", 3)
    flag = {
        "rules": [
            {
                "id": f"r{i}",
                "serve": {"variant": "b"},
                "clauses": [{"attribute": "x", "op": "in", "values": [str(i)]}],
            }
            for i in range(4)
        ]
    }
    t = compile_flag(flag, ["a", "b"])
    assert isinstance(t, FlagTargeting)
    assert t.evaluate.__code__.co_filename != "<banditflags rules>"
    assert t.evaluate("u", {"x": "3"}).rule == "r3"
