"""Targets, rules and segment clauses: the checks a schema cannot express (docs/targeting.md).

The shapes are the Structs of :mod:`~banditflags_server.api.schemas` (``Rule``, ``RuleClause``, ``Serve``,
``Target``); this module applies the SDK compiler's checks of each operator's values (regexes that
compile and cannot backtrack exponentially, semantic versions, instants, finite numbers), rule ids,
what a rule serves and the targeted units, naming the field (``rules[2].clauses[0].values[1]``). The
server imports nothing from the SDK: the golden vectors (tests/vectors/rules.json, ``invalid``) pin both
to the same paths. Which segments exist is the service's to check (:mod:`~banditflags_server.service.
segments`). Returns the lists as stored and served (``/v1/config``).

>>> from banditflags_server.api.validation import Problems
>>> p = Problems()
>>> _ = clauses_json([RuleClause(op="lt", attribute="age", values=["10"])], "clauses", p, segments=True)
>>> p.items
[('clauses[0].values[0]', "must be finite numbers (not booleans), got '10'")]
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from msgspec import UNSET

from banditflags_server.api.schemas import Rule, RuleClause, Target

__all__ = ["MAX_FLAG_UNITS", "clauses_json", "rules_json", "targets_json"]

MAX_FLAG_UNITS = 10_000
MAX_PATTERN_LENGTH = 256
TARGET = "target"  # the rule of an individual target: no rule may take this id


class _Problems(Protocol):
    def add(self, field: str | None, message: str) -> None: ...


# -- values per operator (the SDK's banditflags._operators, _semver and _timestamps) ----------------

_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"v?{_NUM}(?:\.{_NUM})?(?:\.{_NUM})?(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-]([0-9]{2})(?::?([0-9]{2}))?)?)?"
)


def _finite(v: object) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _literal(v: object) -> bool:
    return isinstance(v, (str, bool)) or _finite(v)


def _semver(v: object) -> bool:
    return isinstance(v, str) and len(v) <= 256 and _SEMVER.fullmatch(v) is not None


def _instant(v: object) -> bool:
    if _finite(v):
        return True
    if not isinstance(v, str) or len(v) > 64:
        return False
    m = _ISO.fullmatch(v)
    if m is None:
        return False
    year, month, day, hour, minute, second, off_h, off_m = m.groups()
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return (
        int(hour or 0) <= 23
        and int(minute or 0) <= 59
        and int(second or 0) <= 59
        and (int(off_h or 0) <= 23 and int(off_m or 0) <= 59)
    )


try:  # the parser behind re.compile, to look at a pattern's structure (re._parser from 3.11)
    _sre_parse: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - Python 3.10
    _sre_parse = importlib.import_module("sre_parse")


def _pattern_problem(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"regular expression longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re.compile(pattern)
        nested = _nested_repeat(_sre_parse.parse(pattern))
    except Exception as exc:  # re.error, OverflowError, RecursionError
        return f"regular expression does not compile: {exc}"
    return (
        "nested repeats ((a+)+ and the like) can take exponential time; rewrite the pattern"
        if nested
        else None
    )


def _nested_repeat(parsed: Any, repeated: bool = False) -> bool:
    """A repeat of variable count inside a repeat that may run more than once (as the SDK refuses)."""
    for op, av in parsed:
        name = getattr(op, "name", str(op))
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            lo, hi, body = av
            if (repeated and lo != hi) or _nested_repeat(body, repeated or hi > 1):
                return True
        elif name in ("POSSESSIVE_REPEAT", "ATOMIC_GROUP"):
            if _nested_repeat(av[2] if name == "POSSESSIVE_REPEAT" else av, False):
                return True
        elif name == "SUBPATTERN":
            if _nested_repeat(av[-1], repeated):
                return True
        elif name == "BRANCH":
            if any(_nested_repeat(b, repeated) for b in av[1]):
                return True
        elif name in ("ASSERT", "ASSERT_NOT"):
            if _nested_repeat(av[1], repeated):
                return True
        elif name == "GROUPREF_EXISTS" and any(_nested_repeat(b, repeated) for b in av[1:] if b):
            return True
    return False


_Check = tuple[Callable[[object], bool], str]
_STRINGS: _Check = (lambda v: isinstance(v, str), "strings")
_NUMBERS: _Check = (_finite, "finite numbers (not booleans)")
_SEMVERS: _Check = (_semver, "semantic versions (strings)")
_INSTANTS: _Check = (_instant, "ISO-8601 strings or epoch seconds")
_VALUES: dict[str, _Check] = {
    "in": (_literal, "strings, finite numbers or booleans"),
    "starts_with": _STRINGS,
    "ends_with": _STRINGS,
    "contains": _STRINGS,
    "matches": (lambda v: isinstance(v, str), "regular expressions (strings)"),
    **dict.fromkeys(("lt", "lte", "gt", "gte"), _NUMBERS),
    **dict.fromkeys(("semver_eq", "semver_lt", "semver_lte", "semver_gt", "semver_gte"), _SEMVERS),
    "before": _INSTANTS,
    "after": _INSTANTS,
    "in_segment": (lambda v: isinstance(v, str), "segment keys (strings)"),
}


def _clause(c: RuleClause, path: str, p: _Problems) -> dict[str, Any]:
    if c.op != "in_segment" and c.attribute is UNSET:
        p.add(f"{path}.attribute", "must be a string of 1 to 256 characters")
    if c.op == "exists":
        if c.values:
            p.add(f"{path}.values", "must be absent or empty for exists")
    elif not c.values:
        p.add(f"{path}.values", f"must be a non-empty list of {_VALUES[c.op][1]}")
    else:
        check, what = _VALUES[c.op]
        for k, v in enumerate(c.values):
            if not check(v):
                p.add(f"{path}.values[{k}]", f"must be {what}, got {v!r:.80}")
            elif c.op == "matches":
                problem = _pattern_problem(v)
                if problem:
                    p.add(f"{path}.values[{k}]", problem)
    out: dict[str, Any] = {"op": c.op, "values": list(c.values), "negate": c.negate}
    if c.attribute is not UNSET and c.op != "in_segment":
        out = {"attribute": c.attribute, **out}
    return out


def clauses_json(
    clauses: Sequence[RuleClause], path: str, p: _Problems, *, segments: bool = True
) -> list[dict[str, Any]]:
    """Clauses as stored; ``segments=False`` refuses ``in_segment`` (a segment's own clauses)."""
    out = []
    for j, c in enumerate(clauses):
        if not segments and c.op == "in_segment":
            p.add(f"{path}[{j}].op", "a segment's clauses cannot use in_segment")
        out.append(_clause(c, f"{path}[{j}]", p))
    return out


def _serve(rule: Rule, variants: Sequence[str], path: str, p: _Problems) -> dict[str, Any]:
    s = rule.serve
    given = [k for k in ("variant", "weights", "bandit") if getattr(s, k) not in (UNSET, False)]
    if len(given) != 1:
        p.add(path, "must have exactly one of variant, weights or bandit: true")
        return {}
    if s.variant is not UNSET:
        if variants and s.variant not in variants:
            p.add(f"{path}.variant", f"must be one of the flag's variants, got {s.variant!r:.80}")
        return {"variant": s.variant}
    if s.weights is not UNSET:
        if len(s.weights) != len(variants):
            p.add(f"{path}.weights", f"must be a list of {len(variants)} numbers (one per variant)")
        elif any(w < 0 or not math.isfinite(w) for w in s.weights):
            j = next(j for j, w in enumerate(s.weights) if w < 0 or not math.isfinite(w))
            p.add(f"{path}.weights[{j}]", "must be a finite number >= 0")
        elif not any(s.weights):
            p.add(f"{path}.weights", "must have a positive sum")
        return {"weights": list(s.weights)}
    return {"bandit": True}


def rules_json(rules: Sequence[Rule], variants: Sequence[str], p: _Problems) -> list[dict[str, Any]]:
    """A flag's rules as stored, checked against its variant keys."""
    out = []
    ids: set[str] = set()
    for i, r in enumerate(rules):
        path = f"rules[{i}]"
        if r.id == TARGET or r.id in ids:
            p.add(f"{path}.id", f"{r.id!r} is {'reserved' if r.id == TARGET else 'used by another rule'}")
        ids.add(r.id)
        if not r.clauses:
            p.add(f"{path}.clauses", "must be a non-empty list of clauses")
        clauses = clauses_json(r.clauses, f"{path}.clauses", p)
        out.append({"id": r.id, "clauses": clauses, "serve": _serve(r, variants, f"{path}.serve", p)})
    return out


def targets_json(targets: Sequence[Target], variants: Sequence[str], p: _Problems) -> list[dict[str, Any]]:
    """A flag's targets as stored: known variants, each unit once in the flag, at most 10,000 units."""
    seen: set[str] = set()
    total = 0
    for i, t in enumerate(targets):
        if variants and t.variant not in variants:
            p.add(f"targets[{i}].variant", f"must be one of the flag's variants, got {t.variant!r:.80}")
        total += len(t.units)
        if total > MAX_FLAG_UNITS:
            p.add(f"targets[{i}].units", f"more than {MAX_FLAG_UNITS} targeted units in the flag")
            break
        for k, unit in enumerate(t.units):
            if unit in seen:
                p.add(f"targets[{i}].units[{k}]", f"unit {unit!r:.80} is listed twice in the flag")
            seen.add(unit)
    return [{"variant": t.variant, "units": list(t.units)} for t in targets]
