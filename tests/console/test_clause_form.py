"""The targeting editors' form logic without a server: values per operator and back, indexed rows,
the editing buttons, and the API's error paths mapped to the form's fields."""

from __future__ import annotations

import doctest

import pytest

from banditflags_server.console import clause_form as cf
from banditflags_server.console import rules_view


def test_doctests() -> None:
    assert doctest.testmod(cf).failed == 0
    assert doctest.testmod(rules_view).failed == 0


@pytest.mark.parametrize(
    ("op", "values"),
    [
        ("in", ["us", "18", 18, 1.5, True, "true", "null", "[1]", ' "quoted" ', "", "a\nb", "x\u2028y"]),
        ("gte", [18, -2.5, 0]),
        ("matches", ["^a,b$", "18", '"q"', " lead", "café "]),
        ("before", ["2026-12-03T10:00:00Z", 1700000000]),
        ("semver_gt", ["1.2.3-rc.1"]),
    ],
)
def test_values_round_trip(op: str, values: list[object]) -> None:
    # What the form shows of stored values reads back as the same values: saving a form unchanged
    # changes no rule.
    shown = cf.values_text(op, values)
    assert cf.values_json(op, shown) == values


def test_rows_in_index_order_with_gaps_closed() -> None:
    form = {
        "rules-10-id": "late",
        "rules-2-id": "early",
        "rules-2-clauses-5-op": "exists",
        "rules-2-clauses-1-op": "in",
        "rules-2-clauses-1-values": "a\n\n b ",
        "csrf": "x",
    }
    rows = cf.indexed(form, "rules")
    assert [r["id"] for r in rows] == ["early", "late"]
    clauses = cf.clauses_draft(rows[0])
    assert [c["op"] for c in clauses] == ["in", "exists"]
    assert cf.clauses_body(clauses) == [{"op": "in", "values": ["a", "b"]}, {"op": "exists", "values": []}]


def test_editing_buttons() -> None:
    items = ["a", "b", "c"]
    assert cf.edit_list(items, "up-2", str) and items == ["a", "c", "b"]
    assert cf.edit_list(items, "down-0", str) and items == ["c", "a", "b"]
    assert cf.edit_list(items, "up-0", str) and items == ["c", "a", "b"]  # first stays first
    assert cf.edit_list(items, "remove-1", str) and items == ["c", "b"]
    assert cf.edit_list(items, "add", lambda: "new") and items == ["c", "b", "new"]
    for bad in ("remove-9", "remove-x", "swap-1", "add-1"):
        assert not cf.edit_list(items, bad, str) and items == ["c", "b", "new"]
    clauses: list[dict[str, object]] = []
    for _ in range(cf.MAX_CLAUSES + 3):
        cf.edit_clauses(clauses, "add")
    assert len(clauses) == cf.MAX_CLAUSES


@pytest.mark.parametrize(
    ("path", "field", "prefix"),
    [
        ("rules[2].clauses[0].op", "rules-2-clauses-0-op", ""),
        ("rules[0].serve", "rules-0-serve", ""),
        ("rules[0].serve.variant", "rules-0-variant", ""),
        ("rules[1].serve.weights[2]", "rules-1-weights", "weight 3"),
        ("targets[0].units[3]", "targets-0-units", "unit 4"),
        ("clauses[1].values[0]", "clauses-1-values", "value 1"),
        ("included[9]", "included", "unit 10"),
        ("rules[3]", "rules-3", ""),
        ("key", "key", ""),
    ],
)
def test_error_paths_to_fields(path: str, field: str, prefix: str) -> None:
    assert cf.field_name(path) == (field, prefix)


def test_field_errors_keep_the_first_per_field() -> None:
    problems: list[tuple[str | None, str]] = [
        ("rules[0].clauses[0].values[1]", "bad"),
        ("rules[0].clauses[0].values[3]", "worse"),
        (None, "general"),
    ]
    assert cf.field_errors(problems, general="g") == {
        "rules-0-clauses-0-values": "value 2: bad",
        "g": "general",
    }
