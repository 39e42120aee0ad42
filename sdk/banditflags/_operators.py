"""Clause operators: each clause of a targeting rule compiled into one closure over its attribute.

A compiled clause is ``clause(unit_id, attributes) -> bool``. Everything that can be done once is
done when the config changes: value sets are frozensets, bounds are pre-reduced (``lt`` any of
``[3, 7]`` is ``< 7``), versions and instants are parsed, regexes are compiled and checked. Per call a
clause does one ``dict.get``, one class check and one test on the attribute's common type; other
types, lists and bad values take :func:`_slow`.

What an attribute value is (see docs/targeting.md):

- **missing**: the key is absent, or its value is ``None``, NaN, or of a type that is not a value
  (dict, bytes, set of dicts, an object...). A missing attribute matches no clause, negated or not;
  only ``exists`` tells presence apart (``exists`` negated matches exactly the missing ones).
- a **scalar**: str, int, float, bool (subclasses count as their base type), and for ``before`` /
  ``after`` also ``datetime.datetime`` / ``datetime.date``. A scalar of the wrong type for the
  operator (``lt`` on ``"5"``, ``in`` with ``True`` against ``[1]``) is present but does not match,
  so ``negate`` turns it into a match.
- a **list** (list, tuple, set, frozenset) of scalars: the clause matches if any element does;
  elements that are not scalars are skipped; ``negate`` applies to that "any" (so a negated ``in``
  means "no element is in the values", and an empty list matches it).

>>> c = attribute_clause("country", "in", ["us", "ca"], negate=False)
>>> c("u1", {"country": "ca"}), c("u1", {"country": ["fr", "us"]}), c("u1", {})
(True, True, False)
>>> n = attribute_clause("country", "in", ["us", "ca"], negate=True)
>>> n("u1", {"country": "fr"}), n("u1", {"country": 1}), n("u1", {"country": None})
(True, True, False)
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._semver import SemverKey, parse_semver, semver_of_str
from ._timestamps import instant_of_str, parse_instant

__all__ = [
    "INLINE_KINDS",
    "MAX_PATTERN_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "MAX_VALUES",
    "OPERATORS",
    "Clause",
    "Inline",
    "InvalidRule",
    "attribute_clause",
    "clause_cost",
    "inline_of",
    "is_finite_number",
]

Clause = Callable[[str, Mapping[str, Any]], bool]
_Test = Callable[[Any], Any]  # a truthy result is a match

#: Values of one clause (a long ``in`` list of ids belongs in a segment's ``included``).
MAX_VALUES = 10_000
#: Regex patterns longer than this are rejected when the config is compiled.
MAX_PATTERN_LENGTH = 256
#: ``matches`` never matches a string longer than this (a bound on backtracking; see _check_pattern).
MAX_SUBJECT_LENGTH = 1024

_INVALID = object()  # a value that is not an attribute value: treated as missing
_LISTS = (list, tuple, set, frozenset)


class InvalidRule(Exception):
    """A clause, rule or segment the compiler rejects; ``path`` is relative to the object compiled."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Inline:
    """How a clause can be written out inside a flag's generated evaluator (:mod:`._codegen`).

    The clause is ``fast`` on values of class ``cls`` and ``_slow(v, test, ...)`` on anything else;
    ``kind`` names the fast test's shape (one of :data:`INLINE_KINDS`) and ``arg`` its operand: the
    clause's own compiled values, never text (the generator writes only names and operators).
    """

    name: str  # the attribute
    cls: type
    kind: str
    arg: Any
    test: _Test
    negate: bool


#: The fast tests a generated evaluator writes out: ``v`` is the attribute's value, ``A`` the operand.
INLINE_KINDS = {
    "in": "v in {A}",
    "startswith": "v.startswith({A})",
    "endswith": "v.endswith({A})",
    "contains": "{A} in v",
    "lt": "v < {A}",
    "lte": "v <= {A}",
    "gt": "v > {A}",
    "gte": "v >= {A}",
    "call": "{A}(v)",
}
_INLINE_ATTR = "_banditflags_inline"


def _inline(clause: Clause, spec: Inline) -> Clause:
    setattr(clause, _INLINE_ATTR, spec)  # a function attribute: the clause stays a plain closure
    return clause


def inline_of(clause: Clause) -> Inline | None:
    """The clause's :class:`Inline` description, or None for one that is only callable."""
    spec = getattr(clause, _INLINE_ATTR, None)
    return spec if isinstance(spec, Inline) else None


def _scalar(v: object) -> Any:
    """``v`` as a plain scalar (subclasses to their base type), or ``_INVALID``."""
    c = v.__class__
    if c is str or c is int or c is bool:
        return v
    if c is float:
        return v if v == v else _INVALID  # NaN: no order, equal to nothing
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):  # bool cannot be subclassed, so this is IntEnum and the like
        return int.__index__(v)
    if isinstance(v, float):
        f = float.__float__(v)
        return f if f == f else _INVALID
    if isinstance(v, dt.date):  # datetime included; only before/after read it
        return v
    return _INVALID


def _slow(v: object, test: _Test, hit: bool, miss: bool) -> bool:
    """A value the fast path did not take: missing, a list, a subclass, another scalar type."""
    if v is None:
        return False
    if isinstance(v, _LISTS):
        for e in v:
            x = _scalar(e)
            if x is not _INVALID and test(x):
                return hit
        return miss
    x = _scalar(v)
    if x is _INVALID:
        return False
    return hit if test(x) else miss


def _clause(
    name: str, cls: type, fast: _Test, test: _Test, negate: bool, kind: str = "call", arg: Any = None
) -> Clause:
    hit, miss = not negate, negate

    def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        v = attributes.get(name)
        if v.__class__ is cls:
            return hit if fast(v) else miss
        return _slow(v, test, hit, miss)

    return _inline(clause, Inline(name, cls, kind, fast if kind == "call" else arg, test, negate))


def _str_clause(name: str, kind: str, arg: Any, test: _Test, negate: bool) -> Clause:
    """:func:`_clause` with the string test written out, where it would be a Python function: the
    commonest clauses then cost one Python call instead of two (calls are most of a rule's cost)."""
    hit, miss = not negate, negate
    if kind == "startswith":

        def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
            v = attributes.get(name)
            if v.__class__ is str:
                return hit if v.startswith(arg) else miss
            return _slow(v, test, hit, miss)

    elif kind == "endswith":

        def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
            v = attributes.get(name)
            if v.__class__ is str:
                return hit if v.endswith(arg) else miss
            return _slow(v, test, hit, miss)

    else:  # contains, one value

        def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
            v = attributes.get(name)
            if v.__class__ is str:
                return hit if arg in v else miss
            return _slow(v, test, hit, miss)

    return _inline(clause, Inline(name, str, kind, arg, test, negate))


def _of_type(cls: type, fast: _Test) -> _Test:
    """The slow-path test: ``fast`` on values of ``cls``, no match on any other type."""
    return lambda x: x.__class__ is cls and fast(x)


# -- value checks (compile time) --------------------------------------------------------------------


def _require_values(values: object, check: Callable[[object], bool], what: str) -> list[Any]:
    if not isinstance(values, (list, tuple)) or not values:
        raise InvalidRule("values", f"must be a non-empty list of {what}")
    if len(values) > MAX_VALUES:
        raise InvalidRule("values", f"more than {MAX_VALUES} values")
    for i, v in enumerate(values):
        if not check(v):
            raise InvalidRule(f"values[{i}]", f"must be {what}, got {v!r:.80}")
    return list(values)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def is_finite_number(v: object) -> bool:
    """An int or float, not bool, finite (an int too large for a float is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _is_literal(v: object) -> bool:
    return isinstance(v, (str, bool)) or is_finite_number(v)


# -- operators --------------------------------------------------------------------------------------


def _in(name: str, values: object, negate: bool) -> Clause:
    vals = _require_values(values, _is_literal, "strings, finite numbers or booleans")
    strs = frozenset(v for v in vals if isinstance(v, str))
    bools = frozenset(v for v in vals if isinstance(v, bool))
    # 1 and 1.0 are one JSON number and hash alike, so one set serves ints and floats; booleans are
    # kept apart because True == 1 in Python but not in JSON.
    nums = frozenset(v for v in vals if is_finite_number(v))

    def test(x: Any) -> bool:
        c = x.__class__
        if c is str:
            return x in strs
        if c is bool:
            return x in bools
        return (c is int or c is float) and x in nums

    # strs.__contains__ is a C call: no second Python frame (and written out as `v in A` when generated)
    return _clause(name, str, strs.__contains__, test, negate, "in", strs)


def _affix(method: str) -> Callable[[str, object, bool], Clause]:
    def build(name: str, values: object, negate: bool) -> Clause:
        affixes = tuple(_require_values(values, _is_str, "strings"))
        # str.startswith/endswith take a tuple: all the ORed values in one C call.
        method_of_str: Callable[[str, tuple[str, ...]], bool] = getattr(str, method)
        test = _of_type(str, lambda s: method_of_str(s, affixes))
        return _str_clause(name, method, affixes, test, negate)

    return build


def _contains(name: str, values: object, negate: bool) -> Clause:
    subs = _require_values(values, _is_str, "strings")
    if len(subs) == 1:
        sub = subs[0]
        return _str_clause(name, "contains", sub, _of_type(str, lambda s: sub in s), negate)
    search = re.compile("|".join(re.escape(s) for s in subs)).search  # one C scan for all of them
    return _clause(name, str, search, _of_type(str, search), negate)


def _matches(name: str, values: object, negate: bool) -> Clause:
    patterns = _require_values(values, _is_str, "regular expressions (strings)")
    searches = [_compile_pattern(p, i).search for i, p in enumerate(patterns)]
    limit = MAX_SUBJECT_LENGTH

    def fast(s: str) -> bool:
        if len(s) > limit:
            return False
        for search in searches:  # noqa: SIM110  # a loop: any() over a generator costs more
            if search(s) is not None:
                return True
        return False

    return _clause(name, str, fast, _of_type(str, fast), negate)


def _numeric(
    pick: Callable[[Sequence[float]], float], method: str, kind: str
) -> Callable[[str, object, bool], Clause]:
    def build(name: str, values: object, negate: bool) -> Clause:
        nums = _require_values(values, is_finite_number, "finite numbers (not booleans)")
        # ORed values reduce to one bound; `bound.__gt__(x)` is `x < bound`. A float bound compares
        # exactly with int and float attributes alike (an int bound would say NotImplemented to a float).
        bound = float(pick(nums))
        cmp: _Test = getattr(bound, method)

        def test(x: Any) -> bool:
            c = x.__class__
            return (c is int or c is float) and cmp(x)

        return _clause(name, int, cmp, test, negate, kind, bound)  # `v < bound`: exact for ints too

    return build


def _semver(kind: str) -> Callable[[str, object, bool], Clause]:
    def build(name: str, values: object, negate: bool) -> Clause:
        raw = _require_values(values, lambda v: parse_semver(v) is not None, "semantic versions (strings)")
        keys: list[SemverKey] = [k for k in map(parse_semver, raw) if k is not None]
        if kind == "eq":
            wanted = frozenset(keys)
            ok: _Test = wanted.__contains__
        else:  # any of the values: below the highest, above the lowest
            bound = max(keys) if kind in ("lt", "lte") else min(keys)
            ok = getattr(bound, {"lt": "__gt__", "lte": "__ge__", "gt": "__lt__", "gte": "__le__"}[kind])

        def fast(s: str) -> bool:
            k = semver_of_str(s)
            return k is not None and ok(k)

        return _clause(name, str, fast, _of_type(str, fast), negate)

    return build


def _instant(after: bool) -> Callable[[str, object, bool], Clause]:
    def build(name: str, values: object, negate: bool) -> Clause:
        raw = _require_values(
            values,
            lambda v: not isinstance(v, bool) and parse_instant(v) is not None and _is_time_literal(v),
            "ISO-8601 strings or epoch seconds",
        )
        instants = [t for t in map(parse_instant, raw) if t is not None]
        # after any: later than the earliest; before any: earlier than the latest. A float bound
        # compares exactly with int and float instants alike.
        cmp: _Test = float(min(instants)).__lt__ if after else float(max(instants)).__gt__

        def fast(s: str) -> bool:
            t = instant_of_str(s)
            return t is not None and cmp(t) is True

        def test(x: Any) -> bool:
            t = parse_instant(x)
            return t is not None and cmp(t) is True

        return _clause(name, str, fast, test, negate)

    return build


def _is_time_literal(v: object) -> bool:
    # In a config an instant is a string or a finite number (a datetime cannot come from JSON).
    return isinstance(v, str) or is_finite_number(v)


def _exists(name: str, values: object, negate: bool) -> Clause:
    if values is not None and values != []:
        raise InvalidRule("values", "must be absent or empty for exists")
    hit, miss = not negate, negate

    def clause(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        v = attributes.get(name)
        if v.__class__ is str:
            return hit
        if v is None:
            return miss
        return hit if isinstance(v, _LISTS) or _scalar(v) is not _INVALID else miss

    return clause


_BUILDERS: dict[str, Callable[[str, object, bool], Clause]] = {
    "in": _in,
    "starts_with": _affix("startswith"),
    "ends_with": _affix("endswith"),
    "contains": _contains,
    "matches": _matches,
    "lt": _numeric(max, "__gt__", "lt"),
    "lte": _numeric(max, "__ge__", "lte"),
    "gt": _numeric(min, "__lt__", "gt"),
    "gte": _numeric(min, "__le__", "gte"),
    "semver_eq": _semver("eq"),
    "semver_lt": _semver("lt"),
    "semver_lte": _semver("lte"),
    "semver_gt": _semver("gt"),
    "semver_gte": _semver("gte"),
    "before": _instant(after=False),
    "after": _instant(after=True),
    "exists": _exists,
}
# Relative cost, so a rule tests its cheap clauses first (clauses are pure: order cannot change
# the outcome, only how soon a non-match is known).
_COST = {"in": 1, "exists": 1, "lt": 2, "lte": 2, "gt": 2, "gte": 2, "starts_with": 2, "ends_with": 2}
_COST.update(contains=3, before=4, after=4, in_segment=5, matches=8)

#: Every operator name, ``in_segment`` (compiled by _targeting) included.
OPERATORS = frozenset(_BUILDERS) | {"in_segment"}


def clause_cost(op: str) -> int:
    return _COST.get(op, 4)


def attribute_clause(name: str, op: str, values: object, negate: bool) -> Clause:
    """Compile one attribute clause; raise :class:`InvalidRule` (path relative to the clause)."""
    build = _BUILDERS.get(op)
    if build is None:
        known = ", ".join(sorted(OPERATORS))
        raise InvalidRule("op", f"unknown operator {op!r:.80}; expected one of {known}")
    return build(name, values, negate)


# -- regular expressions ----------------------------------------------------------------------------

try:  # the parser behind re.compile, to look at a pattern's structure (re._parser from 3.11)
    _sre_parse: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - Python 3.10
    _sre_parse = importlib.import_module("sre_parse")

_REPEATS = {"MAX_REPEAT", "MIN_REPEAT"}


def _compile_pattern(pattern: str, i: int) -> re.Pattern[str]:
    path = f"values[{i}]"
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidRule(path, f"regular expression longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compiled = re.compile(pattern)
        problem = _check_pattern(_sre_parse.parse(pattern))
    except Exception as exc:  # re.error, OverflowError (a{99999999999}), RecursionError
        raise InvalidRule(path, f"regular expression does not compile: {exc}") from None
    if problem:
        raise InvalidRule(path, problem)
    return compiled


def _check_pattern(parsed: Any, repeated: bool = False) -> str | None:
    """Reject the shape behind exponential backtracking: a repeat of variable count inside a repeat
    that may run more than once (``(a+)+``, ``(a|b*)*``, ``(x{1,3}){2,9}``). Python's ``re`` has no
    time limit, so this is checked statically; possessive repeats and atomic groups (3.11+) are
    never backtracked into and reset the check. Polynomial backtracking (``.*.*=``) is bounded only
    by MAX_SUBJECT_LENGTH; see docs/targeting.md."""
    for op, av in parsed:
        name = getattr(op, "name", str(op))
        if name in _REPEATS:
            lo, hi, body = av
            if repeated and lo != hi:
                return "nested repeats ((a+)+ and the like) can take exponential time; rewrite the pattern"
            problem = _check_pattern(body, repeated or hi > 1)
        elif name == "POSSESSIVE_REPEAT" or name == "ATOMIC_GROUP":
            problem = _check_pattern(av[2] if name == "POSSESSIVE_REPEAT" else av, False)
        elif name == "SUBPATTERN":
            problem = _check_pattern(av[-1], repeated)
        elif name == "BRANCH":
            problem = next((p for p in (_check_pattern(b, repeated) for b in av[1]) if p), None)
        elif name in ("ASSERT", "ASSERT_NOT"):
            problem = _check_pattern(av[1], repeated)
        elif name == "GROUPREF_EXISTS":
            problem = next((p for p in (_check_pattern(b, repeated) for b in av[1:] if b) if p), None)
        else:
            problem = None
        if problem:
            return problem
    return None
