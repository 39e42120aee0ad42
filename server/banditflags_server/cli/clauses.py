"""Clauses as typed on a command line, and targets, rules and clauses as printed (docs/targeting.md).

``ATTRIBUTE [not] OP VALUE,VALUE,...`` reads as one clause: the values are split on commas; a value in
double quotes is a JSON string (``"1"`` stays text, ``"a,b"`` keeps its comma); ``[...]`` is a JSON
list of values. Unquoted values are typed by the operator: numbers for ``lt``, ``lte``, ``gt``, ``gte``;
numbers, ``true`` and ``false`` for ``in`` (everything else is text), epoch seconds or text for
``before``/``after``, text for the rest. ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` are short for
``in``, ``not in``, ``lt``, ``lte``, ``gt``, ``gte``. What the server refuses (an unknown operator, a
value of the wrong type) it names by field, ``clauses[0].op``.

>>> parse_clause("country in DE,AT, CH")
{'attribute': 'country', 'op': 'in', 'values': ['DE', 'AT', 'CH']}
>>> parse_clause("plan == pro")
{'attribute': 'plan', 'op': 'in', 'values': ['pro']}
>>> parse_clause('age >= 18')
{'attribute': 'age', 'op': 'gte', 'values': [18]}
>>> parse_clause('build in 7, "7", true')
{'attribute': 'build', 'op': 'in', 'values': [7, '7', True]}
>>> parse_clause('email not ends_with @corp.test,@corp.example')
{'attribute': 'email', 'op': 'ends_with', 'values': ['@corp.test', '@corp.example'], 'negate': True}
>>> parse_clause("beta exists")
{'attribute': 'beta', 'op': 'exists', 'values': []}
>>> parse_clause('tags in ["a,b", "c"]')
{'attribute': 'tags', 'op': 'in', 'values': ['a,b', 'c']}
>>> format_clause(parse_clause('build not in 7, "7", "a,b", x'))
'build not in 7, "7", "a,b", x'
>>> format_clause({"op": "in_segment", "values": ["beta"], "negate": False})
'in_segment beta'
>>> format_clause({"attribute": "id", "op": "starts_with", "values": [7, "x"]})
'id starts_with [7, "x"]'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ClauseSyntaxError",
    "format_clause",
    "format_rule",
    "format_serve",
    "parse_clause",
    "parse_clauses",
]

ALIASES = {"==": "in", "!=": "in", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
NUMERIC = frozenset({"lt", "lte", "gt", "gte"})
INSTANT = frozenset({"before", "after"})
NO_ATTRIBUTE = "in_segment"


class ClauseSyntaxError(ValueError):
    """A clause that cannot be read (a usage error: the message says what was expected)."""


def _number(text: str) -> int | float | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _value(text: str, op: str) -> Any:
    if text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError:
            raise ClauseSyntaxError(f"{text!r} is not a JSON string") from None
    if op in NUMERIC or op in INSTANT:
        number = _number(text)
        return text if number is None else number
    if op == "in":
        if text in ("true", "false"):
            return text == "true"
        number = _number(text)
        return text if number is None else number
    return text


def _split(text: str) -> list[str]:
    """Comma-separated items; commas inside double quotes do not split."""
    items, current, quoted, escaped = [], [], False, False
    for ch in text:
        if quoted:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == ",":
            items.append("".join(current))
            current = []
        else:
            # A quote opens a quoted item only as its first character: in `0"` it is just a character.
            quoted = ch == '"' and not "".join(current).strip()
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def parse_clause(text: str) -> dict[str, Any]:
    """One clause from ``ATTRIBUTE [not] OP VALUES`` (or ``[not] in_segment KEYS``); see the module."""
    given = text.strip()
    words = given.split(None, 1)
    if not words:
        raise ClauseSyntaxError("empty clause: expected 'ATTRIBUTE OP VALUE,...'")
    attribute: str | None = None
    if words[0] not in (NO_ATTRIBUTE, "not"):
        attribute, text = words[0], (words[1] if len(words) > 1 else "")
        words = text.strip().split(None, 1)
    negate = False
    if words and words[0] == "not":
        negate, words = True, (words[1].strip().split(None, 1) if len(words) > 1 else [])
    if not words:
        raise ClauseSyntaxError(
            f"{given!r}: expected 'ATTRIBUTE [not] OP VALUE,...' such as 'country in DE,AT'"
        )
    op, rest = words[0], (words[1].strip() if len(words) > 1 else "")
    if op == "!=":
        negate = not negate
    op = ALIASES.get(op, op)
    if (attribute is None) != (op == NO_ATTRIBUTE):
        if op == NO_ATTRIBUTE:
            raise ClauseSyntaxError("in_segment takes no attribute: '[not] in_segment KEY,...'")
        raise ClauseSyntaxError(
            f"{given!r}: expected 'ATTRIBUTE [not] OP VALUE,...' (not after the attribute)"
        )
    if rest.startswith("["):
        try:
            values = json.loads(rest)
        except ValueError as exc:
            raise ClauseSyntaxError(f"values {rest!r}: not a JSON list ({exc})") from None
        if not isinstance(values, list):
            raise ClauseSyntaxError(f"values {rest!r}: not a JSON list")
    else:
        values = [_value(item, op) for item in _split(rest)]
    clause: dict[str, Any] = {} if attribute is None else {"attribute": attribute}
    clause.update(op=op, values=values)
    if negate:
        clause["negate"] = True
    return clause


def parse_clauses(texts: Sequence[str]) -> list[dict[str, Any]]:
    """Every ``--clause`` in order; the error names the clause as the server would (``clauses[1]``).

    >>> parse_clauses(["country in DE", "age"])
    Traceback (most recent call last):
    ...
    banditflags_server.cli.clauses.ClauseSyntaxError: --clause 'age' (clauses[1]): 'age': expected ...
    """
    out = []
    for k, text in enumerate(texts):
        try:
            out.append(parse_clause(text))
        except ClauseSyntaxError as exc:
            raise ClauseSyntaxError(f"--clause {text!r} (clauses[{k}]): {exc}") from None
    return out


def _shown(value: Any, op: str) -> str:
    """A value as :func:`parse_clause` reads it back."""
    if not isinstance(value, str):
        return json.dumps(value)
    plain = (
        value
        and value == value.strip()
        and not value.startswith(('"', "["))
        and "," not in value
        and _value(value, op) == value
    )
    return value if plain else json.dumps(value)


def format_clause(clause: dict[str, Any]) -> str:
    """A clause as typed: ``country in DE, AT``, ``email not ends_with @corp.test``."""
    op = str(clause.get("op"))
    words = [] if clause.get("attribute") is None else [str(clause["attribute"])]
    if clause.get("negate"):
        words.append("not")
    words.append(op)
    values: Sequence[Any] = clause.get("values") or []
    text = " ".join(words)
    if not values:
        return text
    shown = [_shown(v, op) for v in values]
    if any(not isinstance(v, str) and _value(t, op) != v for v, t in zip(values, shown, strict=True)):
        return f"{text} {json.dumps(list(values))}"  # a value the operator would not read as typed
    return f"{text} {', '.join(shown)}"


def format_serve(serve: dict[str, Any], variants: Sequence[str]) -> str:
    """What a rule serves: ``green``, ``split a=50% b=50%``, ``its own bandit``.

    >>> format_serve({"weights": [1, 3]}, ["a", "b"])
    'split a=25% b=75%'
    """
    if "variant" in serve:
        return str(serve["variant"])
    if "weights" in serve:
        weights = [float(w) for w in serve["weights"]]
        total = sum(weights) or 1.0
        return "split " + " ".join(
            f"{v}={100 * w / total:.0f}%" for v, w in zip(variants, weights, strict=False)
        )
    return "its own bandit" if serve.get("bandit") else json.dumps(serve)


def format_rule(rule: dict[str, Any]) -> str:
    """A rule's clauses, ANDed: ``country in DE AND plan in pro``."""
    return " AND ".join(format_clause(c) for c in rule.get("clauses") or [])
