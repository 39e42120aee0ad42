"""Targeting (DESIGN.md §9): a flag's ``targets`` and ``rules`` compiled into one evaluator.

Compiled once per config change, never interpreted per decision. :func:`compile_segments`
(:mod:`._segments`) turns the config's ``segments`` into matchers shared by every flag; clauses compile
in :mod:`._clauses` and :mod:`._operators`; :func:`compile_flag` here turns one flag into a
:class:`FlagTargeting` whose ``evaluate(unit_id, attributes)`` answers, in order:

1. an individual target (``targets``: unit id → variant), then
2. the first rule whose clauses all match (clauses ANDed, a clause's ``values`` ORed), else
3. ``None``: the flag's default allocation.

A flag with neither targets nor rules compiles to ``None`` (nothing to evaluate: the caller keeps its
plain path). A bad flag or segment compiles to a :class:`TargetingError` naming the field; nothing
here raises into the caller, and ``evaluate`` never raises (an exception inside it, say from a
caller's own Mapping type, answers ``None``).

>>> flag = {"rules": [{"id": "staff", "serve": {"variant": "green"},
...     "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}]}]}
>>> t = compile_flag(flag, ["blue", "green"])
>>> t.evaluate("u1", {"email": "ann@corp.test"})
Match(rule='staff', index=0, serve='variant', variant=1)
>>> t.evaluate("u1", {"email": "ann@example.com"}) is None
True
>>> compile_flag({"rules": [{"id": "x", "serve": {"variant": "red"}, "clauses": []}]}, ["blue"])
TargetingError(path='rules[0].clauses', message='must be a non-empty list of clauses')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._bucketing import table_from_weights
from ._clauses import SegmentMatcher, TargetingError, all_of, as_list, compile_clauses, unit_set, within
from ._codegen import generate_rules
from ._operators import Clause, InvalidRule, is_finite_number
from ._segments import NO_SEGMENTS, Segments, compile_segments

__all__ = [
    "NO_SEGMENTS",
    "Evaluate",
    "FlagTargeting",
    "Match",
    "Segments",
    "TargetingError",
    "compile_flag",
    "compile_segments",
]

MAX_RULES = 100
MAX_TARGET_UNITS = 10_000  # per flag, over all its targets
MAX_ARMS = 255
RULE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
TARGET = "target"  # Match.rule of an individual target; no rule may take this id

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Match:
    """What a unit matched, built once at compile time (``evaluate`` allocates nothing).

    ``rule`` is the rule's id (``"target"`` for an individual target) and ``index`` its position in
    the flag's rules (-1 for a target). ``serve`` says what it serves: ``"target"`` and ``"variant"``
    a fixed arm (``variant``, an index into the flag's variants); ``"weights"`` a fixed split and
    ``"bandit"`` the rule's own allocation, both bucketed into ``table`` (10,000 arm indexes, §4). A
    bandit rule's ``table`` is the one passed in ``rule_tables``, or ``None`` if none was passed.
    """

    rule: str
    index: int
    serve: str
    variant: int | None = None
    table: bytes | None = field(default=None, repr=False)


# Returns a Match or None; with compile_flag's ``outcome``/``miss``, what those give instead.
Evaluate = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class FlagTargeting:
    """A flag's compiled targeting. ``evaluate(unit_id, attributes)`` → :class:`Match` or ``None``
    (or ``outcome(match)`` / ``miss``, when :func:`compile_flag` was given them).

    ``unit_id`` is the normalised unit id (a non-empty ``str``); ``attributes`` a mapping of name →
    value, or ``None``. ``rules`` holds the Match of each rule, in order (``rules[m.index] is m``).
    """

    evaluate: Evaluate
    rules: tuple[Match, ...]
    targets: int  # individual units targeted


# -- rules ------------------------------------------------------------------------------------------


def _serve(raw: object, rule_id: str, index: int, variants: Sequence[str], tables: Any) -> Match:
    if not isinstance(raw, Mapping):
        raise InvalidRule("serve", "must be an object")
    given = [k for k in ("variant", "weights", "bandit") if raw.get(k) not in (None, False)]
    if len(given) != 1:
        raise InvalidRule("serve", "must have exactly one of variant, weights or bandit: true")
    kind = given[0]
    value = raw[kind]
    if kind == "variant":
        if value not in variants:
            raise InvalidRule("serve.variant", f"must be one of the flag's variants, got {value!r:.80}")
        return Match(rule_id, index, "variant", variant=list(variants).index(value))
    if kind == "bandit":
        if value is not True:
            raise InvalidRule("serve.bandit", "must be true")
        table = None if tables is None else tables.get(rule_id)
        if tables is not None and (not isinstance(table, bytes) or len(table) != 10_000):
            raise InvalidRule("serve.bandit", f"the config has no allocation table for rule {rule_id!r}")
        return Match(rule_id, index, "bandit", table=table)
    return Match(rule_id, index, "weights", table=table_from_weights(_weights(value, len(variants))))


def _weights(raw: object, k: int) -> list[float]:
    if not isinstance(raw, (list, tuple)) or len(raw) != k:
        raise InvalidRule("serve.weights", f"must be a list of {k} numbers (one per variant)")
    for j, w in enumerate(raw):
        if not is_finite_number(w) or w < 0:
            raise InvalidRule(f"serve.weights[{j}]", "must be a finite number >= 0")
    if not any(raw):
        raise InvalidRule("serve.weights", "must have a positive sum")
    return [float(w) for w in raw]


# -- flags ------------------------------------------------------------------------------------------


def compile_flag(
    flag: Mapping[str, Any],
    variants: Sequence[str],
    segments: Segments = NO_SEGMENTS,
    *,
    rule_tables: Mapping[str, bytes] | None = None,
    outcome: Callable[[Match], Any] | None = None,
    miss: Any = None,
    generated: bool = True,
) -> FlagTargeting | TargetingError | None:
    """Compile a flag's ``targets`` and ``rules``: None when it has neither, an error, or the evaluator.

    ``variants`` are the flag's variant keys in order (Match.variant indexes them). ``rule_tables``
    maps bandit rules' ids to their decoded allocation tables from the config; when given, every
    bandit rule must have one. ``outcome``, called once per rule and target at compile time, turns
    each Match into what ``evaluate`` returns for it (the client's ready-made snapshots, so that a
    decision makes no second call), and ``evaluate`` returns ``miss`` instead of None. The rules are
    written out as one generated function (:mod:`._codegen`); ``generated=False`` keeps them as a
    chain of closures instead (the same answers, slower: for differential tests). Never raises.
    """
    try:
        return _compile_flag(flag, variants, segments, rule_tables, outcome, miss, generated)
    except InvalidRule as exc:
        return TargetingError(exc.path, exc.message)
    except Exception as exc:  # a bug here must not take the config down with a traceback
        return TargetingError("", f"targeting could not be compiled: {exc!r:.200}")


def _compile_flag(
    flag: Mapping[str, Any],
    variants: Sequence[str],
    segments: Segments,
    tables: Mapping[str, bytes] | None,
    outcome: Callable[[Match], Any] | None,
    miss: Any,
    generated: bool = True,
) -> FlagTargeting | None:
    if not isinstance(flag, Mapping):
        raise InvalidRule("", "must be an object")
    if len(variants) > MAX_ARMS:
        raise InvalidRule("variants", f"more than {MAX_ARMS} variants")
    targets = _targets(flag.get("targets"), variants)
    rules_raw = as_list(flag.get("rules"), "rules", "rules", MAX_RULES)
    if not targets and not rules_raw:
        return None

    def resolve(key: str) -> SegmentMatcher:
        matcher = segments.matchers.get(key)
        if matcher is not None:
            return matcher
        err = segments.errors.get(key)
        if err is not None:
            raise InvalidRule("", f"segment {key!r} is invalid ({err})")
        raise InvalidRule("", f"unknown segment {key!r:.80}")

    rules: list[tuple[list[Clause], Match]] = []
    ids: set[str] = set()
    for i, raw in enumerate(rules_raw):
        try:
            if not isinstance(raw, Mapping):
                raise InvalidRule("", "must be an object")
            rid = raw.get("id")
            if not isinstance(rid, str) or RULE_ID_RE.match(rid) is None:
                raise InvalidRule("id", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
            if rid == TARGET or rid in ids:
                why = "reserved" if rid == TARGET else "used by another rule"
                raise InvalidRule("id", f"{rid!r} is {why}")
            ids.add(rid)
            cs = compile_clauses(raw.get("clauses"), "clauses", resolve, empty=False)
            rules.append((cs, _serve(raw.get("serve"), rid, i, variants, tables)))
        except InvalidRule as exc:
            raise within(f"rules[{i}]", exc) from None
    matches = tuple(m for _, m in rules)
    served: list[tuple[list[Clause], Any]] = list(rules)
    units: Mapping[str, Any] = targets
    if outcome is not None:
        served = [(cs, outcome(m)) for cs, m in rules]
        by_match = {id(m): m for m in targets.values()}  # one Match per target entry, not per unit
        given = {i: outcome(m) for i, m in by_match.items()}
        units = {u: given[id(m)] for u, m in targets.items()}
    evaluate = generate_rules(units, served, miss) if generated and served else None
    if evaluate is None:
        evaluate = _evaluator(units, served, miss)
    return FlagTargeting(evaluate=evaluate, rules=matches, targets=len(targets))


def _targets(raw: object, variants: Sequence[str]) -> dict[str, Match]:
    entries = as_list(raw, "targets", "targets", MAX_ARMS)
    units: dict[str, Match] = {}
    count = 0
    for i, t in enumerate(entries):
        path = f"targets[{i}]"
        if not isinstance(t, Mapping):
            raise InvalidRule(path, "must be an object")
        variant = t.get("variant")
        if not isinstance(variant, str) or variant not in variants:
            raise InvalidRule(f"{path}.variant", f"must be one of the flag's variants, got {variant!r:.80}")
        match = Match(TARGET, -1, TARGET, variant=list(variants).index(variant))
        ids = unit_set(t.get("units"), f"{path}.units", MAX_TARGET_UNITS)
        count += len(ids)
        if count > MAX_TARGET_UNITS:
            raise InvalidRule(f"{path}.units", f"more than {MAX_TARGET_UNITS} targeted units in the flag")
        for u in ids:
            units.setdefault(u, match)  # a unit listed twice: the first target wins, as rules do
    return units


def _evaluator(targets: Mapping[str, Any], served: list[tuple[list[Clause], Any]], miss: Any) -> Evaluate:
    """The closures' evaluator: a targets-only flag, a flag too large to generate, or generated=False.
    Specialised on what the flag has, so a targets-only flag never looks at attributes."""
    lookup = targets.get
    # (first clause, the rest or None, what it serves): the first is called directly, saving a call
    # per rule that fails on its first clause, the common case.
    rules = tuple(
        (cs[0], None if len(cs) == 1 else cs[1] if len(cs) == 2 else all_of(cs[1:]), m) for cs, m in served
    )

    def by_rules(unit_id: str, attributes: Any = None) -> Any:
        try:
            a = attributes if attributes.__class__ is dict else _mapping(attributes)
            for first, rest, match in rules:
                if first(unit_id, a) and (rest is None or rest(unit_id, a)):
                    return match
        except Exception:  # e.g. a caller's Mapping whose get() raises: the default allocation
            pass
        return miss

    def by_targets(unit_id: str, attributes: Any = None) -> Any:
        try:
            return lookup(unit_id, miss)
        except Exception:  # an unhashable unit id
            return miss

    def by_both(unit_id: str, attributes: Any = None) -> Any:
        try:
            m = lookup(unit_id)
        except Exception:
            m = None
        return m if m is not None else by_rules(unit_id, attributes)

    if not rules:
        return by_targets
    return by_both if targets else by_rules


def _mapping(attributes: object) -> Mapping[str, Any]:
    return attributes if isinstance(attributes, Mapping) else _EMPTY
