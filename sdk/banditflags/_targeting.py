"""Targeting (DESIGN.md §9): a flag's ``targets`` and ``rules`` compiled into one evaluator.

Compiled once per config change, never interpreted per decision. :func:`compile_segments` turns the
config's ``segments`` into matchers shared by every flag; :func:`compile_flag` turns one flag into a
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._bucketing import table_from_weights
from ._operators import Clause, InvalidRule, attribute_clause, clause_cost, is_finite_number

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
MAX_CLAUSES = 50
MAX_TARGET_UNITS = 10_000  # per flag, over all its targets
MAX_SEGMENTS = 1_000
MAX_SEGMENT_UNITS = 100_000  # per segment list (included, excluded)
MAX_SEGMENT_DEPTH = 8  # segments naming segments
MAX_ATTRIBUTE_LENGTH = 256
MAX_ARMS = 255
RULE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
SEGMENT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
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


@dataclass(frozen=True, slots=True)
class TargetingError:
    """A compile error: ``path`` names the field (relative to the flag, absolute for segments)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


SegmentMatcher = Callable[[str, Mapping[str, Any]], bool]
Evaluate = Callable[[str, Any], "Match | None"]


@dataclass(frozen=True, slots=True)
class Segments:
    """The config's segments, compiled once and shared by every flag that names one.

    ``matchers`` holds the good ones by key; ``errors`` the bad ones by key (a flag naming one gets an
    error, other flags are unaffected); ``problems`` every error in config order, for a validator.
    """

    matchers: Mapping[str, SegmentMatcher] = field(default_factory=lambda: _EMPTY)
    errors: Mapping[str, TargetingError] = field(default_factory=lambda: _EMPTY)
    problems: tuple[TargetingError, ...] = ()


NO_SEGMENTS = Segments()


@dataclass(frozen=True, slots=True)
class FlagTargeting:
    """A flag's compiled targeting. ``evaluate(unit_id, attributes)`` → :class:`Match` or ``None``.

    ``unit_id`` is the normalised unit id (a non-empty ``str``); ``attributes`` a mapping of name →
    value, or ``None``. ``rules`` holds the Match of each rule, in order (``rules[m.index] is m``).
    """

    evaluate: Evaluate
    rules: tuple[Match, ...]
    targets: int  # individual units targeted


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") or not prefix else f"{prefix}.{path}"


def _within(prefix: str, exc: InvalidRule) -> InvalidRule:
    return InvalidRule(_join(prefix, exc.path), exc.message)


def _list(raw: object, path: str, what: str, limit: int, *, empty: bool = True) -> list[Any]:
    if raw is None and empty:
        return []
    if not isinstance(raw, (list, tuple)) or (not raw and not empty):
        raise InvalidRule(path, f"must be a {'' if empty else 'non-empty '}list of {what}")
    if len(raw) > limit:
        raise InvalidRule(path, f"more than {limit} {what}")
    return list(raw)


def _units(raw: object, path: str, limit: int) -> frozenset[str]:
    units = _list(raw, path, "unit ids", limit)
    for i, u in enumerate(units):
        if not isinstance(u, str) or not u:
            raise InvalidRule(f"{path}[{i}]", "must be a non-empty string (a unit id)")
    return frozenset(units)


# -- clauses and rules ------------------------------------------------------------------------------

_Resolve = Callable[[str], SegmentMatcher]  # a segment's matcher by key, or raises InvalidRule
_Rule = tuple[Clause, Clause | None, Match]  # first clause, the AND of the others, what it serves


def _clause(raw: object, resolve: _Resolve) -> tuple[int, Clause]:
    if not isinstance(raw, Mapping):
        raise InvalidRule("", "must be an object")
    op = raw.get("op")
    if not isinstance(op, str):
        raise InvalidRule("op", "must be a string")
    negate = raw.get("negate", False)
    if not isinstance(negate, bool):
        raise InvalidRule("negate", "must be true or false")
    if op == "in_segment":
        return clause_cost(op), _segment_clause(raw.get("values"), negate, resolve)
    name = raw.get("attribute")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ATTRIBUTE_LENGTH:
        raise InvalidRule("attribute", f"must be a string of 1 to {MAX_ATTRIBUTE_LENGTH} characters")
    return clause_cost(op), attribute_clause(name, op, raw.get("values"), negate)


def _segment_clause(values: object, negate: bool, resolve: _Resolve) -> Clause:
    keys = _list(values, "values", "segment keys", MAX_SEGMENTS, empty=False)
    matchers: list[SegmentMatcher] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise InvalidRule(f"values[{i}]", "must be a segment key (a string)")
        try:
            matchers.append(resolve(key))
        except InvalidRule as exc:
            raise _within(f"values[{i}]", exc) from None
    if len(matchers) == 1 and not negate:
        return matchers[0]

    def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        for m in matchers:
            if m(unit_id, attributes):
                return not negate
        return negate

    return clause


def _clauses(raw: object, path: str, resolve: _Resolve, *, empty: bool) -> list[Clause]:
    """A list of clauses compiled, cheapest first."""
    items = _list(raw, path, "clauses", MAX_CLAUSES, empty=empty)
    compiled: list[tuple[int, Clause]] = []
    for j, c in enumerate(items):
        try:
            compiled.append(_clause(c, resolve))
        except InvalidRule as exc:
            raise _within(f"{path}[{j}]", exc) from None
    # Clauses are pure, so testing the cheap ones first changes only how soon a miss is known.
    return [c for _, c in sorted(compiled, key=lambda t: t[0])]


def _all_of(cs: Sequence[Clause]) -> Clause:
    """The AND of clauses (of none: never, as a segment without clauses is only its included units)."""
    if len(cs) <= 1:
        return cs[0] if cs else _never
    if len(cs) == 2:
        first, second = cs
        return lambda u, a: first(u, a) and second(u, a)

    def every(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        for c in cs:  # noqa: SIM110  # a loop: all() over a generator costs more
            if not c(unit_id, attributes):
                return False
        return True

    return every


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
) -> FlagTargeting | TargetingError | None:
    """Compile a flag's ``targets`` and ``rules``: None when it has neither, an error, or the evaluator.

    ``variants`` are the flag's variant keys in order (Match.variant indexes them). ``rule_tables``
    maps bandit rules' ids to their decoded allocation tables from the config; when given, every
    bandit rule must have one. Never raises.
    """
    try:
        return _compile_flag(flag, variants, segments, rule_tables)
    except InvalidRule as exc:
        return TargetingError(exc.path, exc.message)
    except Exception as exc:  # a bug here must not take the config down with a traceback
        return TargetingError("", f"targeting could not be compiled: {exc!r:.200}")


def _compile_flag(
    flag: Mapping[str, Any], variants: Sequence[str], segments: Segments, tables: Mapping[str, bytes] | None
) -> FlagTargeting | None:
    if not isinstance(flag, Mapping):
        raise InvalidRule("", "must be an object")
    if len(variants) > MAX_ARMS:
        raise InvalidRule("variants", f"more than {MAX_ARMS} variants")
    targets = _targets(flag.get("targets"), variants)
    rules_raw = _list(flag.get("rules"), "rules", "rules", MAX_RULES)
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

    rules: list[_Rule] = []
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
            cs = _clauses(raw.get("clauses"), "clauses", resolve, empty=False)
            # (first clause, the rest or None, match): evaluate calls the first directly, saving a
            # call per rule that fails on its first clause, the common case.
            rest = None if len(cs) == 1 else cs[1] if len(cs) == 2 else _all_of(cs[1:])
            rules.append((cs[0], rest, _serve(raw.get("serve"), rid, i, variants, tables)))
        except InvalidRule as exc:
            raise _within(f"rules[{i}]", exc) from None
    return FlagTargeting(
        evaluate=_evaluator(targets, tuple(rules)),
        rules=tuple(m for _, _, m in rules),
        targets=len(targets),
    )


def _targets(raw: object, variants: Sequence[str]) -> dict[str, Match]:
    entries = _list(raw, "targets", "targets", MAX_ARMS)
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
        ids = _units(t.get("units"), f"{path}.units", MAX_TARGET_UNITS)
        count += len(ids)
        if count > MAX_TARGET_UNITS:
            raise InvalidRule(f"{path}.units", f"more than {MAX_TARGET_UNITS} targeted units in the flag")
        for u in ids:
            units.setdefault(u, match)  # a unit listed twice: the first target wins, as rules do
    return units


def _evaluator(targets: Mapping[str, Match], rules: tuple[_Rule, ...]) -> Evaluate:
    # Specialised on what the flag has, so a targets-only flag never looks at attributes.
    lookup = targets.get

    def by_rules(unit_id: str, attributes: Any = None) -> Match | None:
        try:
            a = attributes if attributes.__class__ is dict else _mapping(attributes)
            for first, rest, match in rules:
                if first(unit_id, a) and (rest is None or rest(unit_id, a)):
                    return match
        except Exception:  # e.g. a caller's Mapping whose get() raises: the default allocation
            pass
        return None

    def by_targets(unit_id: str, attributes: Any = None) -> Match | None:
        try:
            return lookup(unit_id)
        except Exception:  # an unhashable unit id
            return None

    def by_both(unit_id: str, attributes: Any = None) -> Match | None:
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


# -- segments ---------------------------------------------------------------------------------------


def compile_segments(raw: object) -> Segments:
    """Compile the config's ``segments`` list once for all flags. Never raises.

    A segment matches a unit in its ``excluded`` list never, else a unit in its ``included`` list
    always, else when all its clauses match (a segment without clauses matches only its included
    units). Segments may name other segments (``in_segment``), to a depth of 8, without cycles.
    """
    try:
        return _SegmentCompiler(raw).run()
    except Exception as exc:  # a bug here must not take the config down with a traceback
        return Segments(problems=(TargetingError("segments", f"could not be compiled: {exc!r:.200}"),))


class _SegmentCompiler:
    def __init__(self, raw: object) -> None:
        self.raw = raw
        self.entries: dict[str, tuple[int, Mapping[str, Any]]] = {}
        self.matchers: dict[str, SegmentMatcher] = {}
        self.depth: dict[str, int] = {}  # 1 for a segment that names none
        self.errors: dict[str, TargetingError] = {}
        self.problems: list[TargetingError] = []

    def run(self) -> Segments:
        try:
            items = _list(self.raw, "segments", "segments", MAX_SEGMENTS)
        except InvalidRule as exc:
            return Segments(problems=(TargetingError(exc.path, exc.message),))
        for i, s in enumerate(items):
            key = s.get("key") if isinstance(s, Mapping) else None
            if not isinstance(s, Mapping):
                self.problems.append(TargetingError(f"segments[{i}]", "must be an object"))
            elif not isinstance(key, str) or SEGMENT_KEY_RE.match(key) is None:
                msg = "must match ^[a-z0-9][a-z0-9_.-]{0,63}$"
                self.problems.append(TargetingError(f"segments[{i}].key", msg))
            elif key in self.entries:
                err = TargetingError(f"segments[{i}].key", f"duplicate segment key {key!r}")
                self.problems.append(err)
                self.errors[key] = err
            else:
                self.entries[key] = (i, s)
        for key in self.entries:
            self.compile_with_named(key)
        self.problems.sort(key=lambda e: _order(e.path))
        return Segments(MappingProxyType(self.matchers), MappingProxyType(self.errors), tuple(self.problems))

    def compile_with_named(self, root: str) -> None:
        """Compile ``root`` after the segments it names, depth first without recursion (a long chain
        of segments must not exhaust Python's stack)."""
        path: list[str] = []  # the segments being compiled, outermost first: a cycle is a repeat
        todo: list[tuple[str, Iterator[str]]] = []

        def push(key: str) -> None:
            if (
                key in self.entries
                and key not in self.matchers
                and key not in self.errors
                and key not in path
            ):
                path.append(key)
                todo.append((key, iter(_named_segments(self.entries[key][1]))))

        push(root)
        while todo:
            key, named = todo[-1]
            child = next(named, None)
            if child is not None:
                push(child)
                continue
            todo.pop()
            path.pop()
            self.compile_one(key, path)

    def compile_one(self, key: str, path: list[str]) -> None:
        i, entry = self.entries[key]
        below = 0  # the depth of the deepest segment this one names

        def resolve(k: str) -> SegmentMatcher:
            nonlocal below
            if k in path or k == key:
                raise InvalidRule("", f"segment {k!r} names itself through {' -> '.join((*path, key, k))}")
            matcher = self.matchers.get(k)
            if matcher is not None:
                below = max(below, self.depth[k])
                return matcher
            if k in self.errors:  # by path only: chains of invalid segments would nest messages
                raise InvalidRule("", f"segment {k!r} is invalid (see {self.errors[k].path})")
            raise InvalidRule("", f"unknown segment {k!r:.80}")

        try:
            matcher = _segment(entry, resolve)
            if below >= MAX_SEGMENT_DEPTH:  # bounds the evaluator's recursion
                raise InvalidRule("clauses", f"segments nested more than {MAX_SEGMENT_DEPTH} deep")
        except InvalidRule as exc:
            err = TargetingError(_join(f"segments[{i}]", exc.path), exc.message)
            self.errors[key] = err
            self.problems.append(err)
            return
        self.matchers[key] = matcher
        self.depth[key] = below + 1


def _named_segments(entry: Mapping[str, Any]) -> list[str]:
    """The keys a segment's well-formed ``in_segment`` clauses name (malformed ones fail to compile)."""
    clauses = entry.get("clauses")
    keys: list[str] = []
    for c in clauses if isinstance(clauses, (list, tuple)) else ():
        values = c.get("values") if isinstance(c, Mapping) and c.get("op") == "in_segment" else None
        keys += [v for v in values if isinstance(v, str)] if isinstance(values, (list, tuple)) else []
    return keys


def _order(path: str) -> tuple[int, str]:
    m = re.match(r"segments\[(\d+)\]", path)
    return (int(m.group(1)) if m else -1, path)


def _segment(entry: Mapping[str, Any], resolve: _Resolve) -> SegmentMatcher:
    included = _units(entry.get("included"), "included", MAX_SEGMENT_UNITS)
    excluded = _units(entry.get("excluded"), "excluded", MAX_SEGMENT_UNITS)
    clauses = _all_of(_clauses(entry.get("clauses"), "clauses", resolve, empty=True))
    if not included and not excluded:
        return clauses

    def matcher(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        if unit_id in excluded:
            return False
        return unit_id in included or clauses(unit_id, attributes)

    return matcher


def _never(unit_id: str, attributes: Mapping[str, Any]) -> bool:
    return False
