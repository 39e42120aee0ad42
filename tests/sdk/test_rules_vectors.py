"""Targeting against the golden vectors (tests/vectors/rules.json, made by make_rules_vectors.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from banditflags._bucketing import bucket_of
from banditflags._operators import OPERATORS
from banditflags._targeting import FlagTargeting, TargetingError, compile_flag, compile_segments

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rules.json").read_text(encoding="utf-8"))
SEGMENTS = compile_segments(VECTORS["segments"])
FLAGS: dict[str, dict[str, Any]] = {f["key"]: f for f in VECTORS["flags"]}
CASES: list[dict[str, Any]] = VECTORS["cases"]


def compiled(key: str) -> FlagTargeting:
    f = FLAGS[key]
    t = compile_flag(f, f["variants"], SEGMENTS)
    assert isinstance(t, FlagTargeting), t
    return t


def test_vectors_cover_every_operator_negation_and_outcome() -> None:
    ops = {c.get("op") for f in VECTORS["flags"] for r in f["rules"] for c in r["clauses"]}
    ops |= {c.get("op") for s in VECTORS["segments"] for c in s.get("clauses", [])}
    assert ops == OPERATORS
    assert any(c.get("negate") for f in VECTORS["flags"] for r in f["rules"] for c in r["clauses"])
    assert set(Counter(c["serve"] for c in CASES)) == {"target", "variant", "weights", "bandit", None}
    values = [v for c in CASES for v in c["attributes"].values()]
    assert any(isinstance(v, list) for v in values) and any(v is None for v in values)
    assert any(isinstance(v, dict) for v in values) and any(isinstance(v, bool) for v in values)
    assert any(not c["attributes"] for c in CASES)
    assert len(CASES) >= 400 and len(VECTORS["invalid"]) >= 20
    assert SEGMENTS.problems == ()


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c['flag']}|{c['unit_id']}|{json.dumps(c['attributes'])[:40]}"
)
def test_sdk_reproduces_case(case: dict[str, Any]) -> None:
    t = compiled(case["flag"])
    m = t.evaluate(case["unit_id"], case["attributes"])
    if case["rule"] is None:
        assert m is None
        return
    assert m is not None
    assert (m.rule, m.serve) == (case["rule"], case["serve"])
    assert t.rules[m.index] is m if m.rule != "target" else m.index == -1
    variants = FLAGS[case["flag"]]["variants"]
    if m.serve in ("target", "variant"):
        assert m.variant is not None and variants[m.variant] == case["variant"]
    elif m.serve == "weights":
        bucket = bucket_of(FLAGS[case["flag"]]["salt"], case["unit_id"])
        assert m.table is not None and bucket == case["bucket"]
        assert variants[m.table[bucket]] == case["variant"]
    else:
        assert m.table is None and case["variant"] is None  # the bandit's table comes from the config


@pytest.mark.parametrize("bad", VECTORS["invalid"], ids=lambda b: b["name"])
def test_sdk_rejects_invalid_flag(bad: dict[str, Any]) -> None:
    segments = compile_segments(bad["segments"])
    assert [p.path for p in segments.problems] == bad["segment_problems"]
    err = compile_flag(bad["flag"], bad["flag"]["variants"], segments)
    assert isinstance(err, TargetingError)
    assert err.path == bad["path"], str(err)
    assert err.message
