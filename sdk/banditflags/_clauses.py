"""Clause lists, shared by rules and segments: compiled into one predicate, cheapest clause first.

A clause is ``{"attribute", "op", "values", "negate"}`` (see :mod:`._operators`) or
``{"op": "in_segment", "values": [segment keys], "negate"}``, which asks the caller's ``resolve`` for
each segment's compiled matcher. Compile errors are :class:`~._operators.InvalidRule` with a path
relative to the object compiled, turned into a :class:`TargetingError` value at the API's edge.

>>> pred = all_of(compile_clauses([{"attribute": "age", "op": "gte", "values": [18]},
...     {"attribute": "plan", "op": "in", "values": ["pro"]}], "clauses", lambda key: never, empty=False))
>>> pred("u", {"age": 30, "plan": "pro"}), pred("u", {"age": 30})
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._operators import Clause, InvalidRule, attribute_clause, clause_cost

__all__ = [
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_CLAUSES",
    "Resolve",
    "SegmentMatcher",
    "TargetingError",
    "all_of",
    "as_list",
    "compile_clause",
    "compile_clauses",
    "join_path",
    "never",
    "unit_set",
    "within",
]

MAX_CLAUSES = 50
MAX_ATTRIBUTE_LENGTH = 256
MAX_SEGMENT_KEYS = 1_000  # in one in_segment clause

SegmentMatcher = Callable[[str, Mapping[str, Any]], bool]
Resolve = Callable[[str], SegmentMatcher]  # a segment's matcher by key, or raises InvalidRule


@dataclass(frozen=True, slots=True)
class TargetingError:
    """A compile error: ``path`` names the field (relative to the flag, absolute for segments)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(prefix: str, path: str) -> str:
    """``rules[0]`` + ``clauses[1].op`` → ``rules[0].clauses[1].op``; ``values`` + ``[2]`` → ``values[2]``."""
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") or not prefix else f"{prefix}.{path}"


def within(prefix: str, exc: InvalidRule) -> InvalidRule:
    """``exc`` with its path moved under ``prefix`` (errors are raised innermost, named outermost)."""
    return InvalidRule(join_path(prefix, exc.path), exc.message)


def as_list(raw: object, path: str, what: str, limit: int, *, empty: bool = True) -> list[Any]:
    """``raw`` checked as a JSON list of at most ``limit`` items (absent is empty, where allowed)."""
    if raw is None and empty:
        return []
    if not isinstance(raw, (list, tuple)) or (not raw and not empty):
        raise InvalidRule(path, f"must be a {'' if empty else 'non-empty '}list of {what}")
    if len(raw) > limit:
        raise InvalidRule(path, f"more than {limit} {what}")
    return list(raw)


def unit_set(raw: object, path: str, limit: int) -> frozenset[str]:
    """A list of unit ids (non-empty strings) as a frozenset, for one hash lookup per decision."""
    units = as_list(raw, path, "unit ids", limit)
    for i, u in enumerate(units):
        if not isinstance(u, str) or not u:
            raise InvalidRule(f"{path}[{i}]", "must be a non-empty string (a unit id)")
    return frozenset(units)


def compile_clause(raw: object, resolve: Resolve) -> tuple[int, Clause]:
    """One clause and its relative cost."""
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


def _segment_clause(values: object, negate: bool, resolve: Resolve) -> Clause:
    keys = as_list(values, "values", "segment keys", MAX_SEGMENT_KEYS, empty=False)
    matchers: list[SegmentMatcher] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise InvalidRule(f"values[{i}]", "must be a segment key (a string)")
        try:
            matchers.append(resolve(key))
        except InvalidRule as exc:
            raise within(f"values[{i}]", exc) from None
    if len(matchers) == 1 and not negate:
        return matchers[0]

    def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        for m in matchers:
            if m(unit_id, attributes):
                return not negate
        return negate

    return clause


def compile_clauses(raw: object, path: str, resolve: Resolve, *, empty: bool) -> list[Clause]:
    """A list of clauses compiled, cheapest first."""
    items = as_list(raw, path, "clauses", MAX_CLAUSES, empty=empty)
    compiled: list[tuple[int, Clause]] = []
    for j, c in enumerate(items):
        try:
            compiled.append(compile_clause(c, resolve))
        except InvalidRule as exc:
            raise within(f"{path}[{j}]", exc) from None
    # Clauses are pure, so testing the cheap ones first changes only how soon a miss is known.
    return [c for _, c in sorted(compiled, key=lambda t: t[0])]


def all_of(cs: Sequence[Clause]) -> Clause:
    """The AND of clauses (of none: never, as a segment without clauses is only its included units)."""
    if len(cs) <= 1:
        return cs[0] if cs else never
    if len(cs) == 2:
        first, second = cs
        return lambda u, a: first(u, a) and second(u, a)

    def every(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        for c in cs:  # noqa: SIM110  # a loop: all() over a generator costs more
            if not c(unit_id, attributes):
                return False
        return True

    return every


def never(unit_id: str, attributes: Mapping[str, Any]) -> bool:
    return False
