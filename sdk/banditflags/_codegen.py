"""A flag's rules written out as one Python function, compiled once per config change.

Called clause by clause, a 5-rule flag costs a Python call per clause tested, and calls are most of
its cost. Here the rules become the body of a single function: each clause that has an
:class:`~._operators.Inline` description is an expression over the attribute's value (one ``dict.get``,
one class check, the test), the others (``exists``, segments) stay calls. The generated source holds
only names and fixed operators; every operand (attribute names, value sets, bounds, what a rule
serves) is bound in the function's namespace, so nothing from a config is ever parsed as code.

>>> from banditflags._operators import attribute_clause
>>> staff = attribute_clause("email", "ends_with", ["@corp.test"], negate=False)
>>> adult = attribute_clause("age", "gte", [18], negate=False)
>>> evaluate = generate_rules({}, [([staff, adult], "staff")], miss=None)
>>> evaluate("u1", {"email": "ann@corp.test", "age": 30}), evaluate("u1", {"age": 30})
('staff', None)
>>> print(rules_source([([staff, adult], "staff")]))
def evaluate(unit_id, attributes=None):
    try:
        a = attributes if attributes.__class__ is dict else MAPPING(attributes)
        g = a.get
        if (
            (v.endswith(A0_0) if (v := g(N0_0)).__class__ is T0_0 else SLOW(v, X0_0, True, False))
            and (v >= A0_1 if (v := g(N0_1)).__class__ is T0_1 else SLOW(v, X0_1, True, False))
        ):
            return M0
    except Exception:
        pass
    return MISS
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ._operators import INLINE_KINDS, Clause, _slow, inline_of

__all__ = ["MAX_GENERATED_CLAUSES", "generate_rules", "rules_source"]

#: Above this many clauses in one flag, the rules stay closures (the source would only grow).
MAX_GENERATED_CLAUSES = 1_000

_EMPTY: Mapping[str, Any] = MappingProxyType({})

Rules = Sequence[tuple[Sequence[Clause], Any]]  # each rule: its clauses (ANDed, in order), what it serves


def _mapping(attributes: object) -> Mapping[str, Any]:
    return attributes if isinstance(attributes, Mapping) else _EMPTY


def _expression(i: int, j: int, clause: Clause, names: dict[str, Any]) -> str:
    key = f"{i}_{j}"
    spec = inline_of(clause)
    if spec is None or spec.kind not in INLINE_KINDS:
        names[f"K{key}"] = clause
        return f"K{key}(unit_id, a)"
    names[f"N{key}"], names[f"T{key}"], names[f"A{key}"], names[f"X{key}"] = (
        spec.name,
        spec.cls,
        spec.arg,
        spec.test,
    )
    test = INLINE_KINDS[spec.kind].format(A=f"A{key}")
    # The clause's own semantics (_operators._clause): its test on its class, _slow on anything
    # else; the walrus reads the attribute once, in the condition, which Python evaluates first.
    hit, miss = ("False", "True") if spec.negate else ("True", "False")
    head = f"(v := g(N{key})).__class__ is T{key}"
    fast = f"not ({test})" if spec.negate else test
    return f"({fast} if {head} else SLOW(v, X{key}, {hit}, {miss}))"


def rules_source(rules: Rules, names: dict[str, Any] | None = None, targets: bool = False) -> str:
    """The generated function's source (``names`` receives the operands it refers to)."""
    names = {} if names is None else names
    lines = ["def evaluate(unit_id, attributes=None):"]
    if targets:  # individual targets first (DESIGN.md §9 order); an unhashable unit id is no target
        lines += [
            "    try:",
            "        m = LOOKUP(unit_id)",
            "    except Exception:",
            "        m = None",
            "    if m is not None:",
            "        return m",
        ]
    lines += [
        "    try:",
        "        a = attributes if attributes.__class__ is dict else MAPPING(attributes)",
        "        g = a.get",
    ]
    for i, (clauses, served) in enumerate(rules):
        names[f"M{i}"] = served
        tests = [_expression(i, j, c, names) for j, c in enumerate(clauses)]
        lines += ["        if (", "            " + "\n            and ".join(tests), "        ):"]
        lines.append(f"            return M{i}")
    lines += ["    except Exception:", "        pass", "    return MISS"]
    return "\n".join(lines)


def generate_rules(targets: Mapping[str, Any], rules: Rules, miss: Any) -> Any:
    """The evaluator ``(unit_id, attributes) -> served or miss``: targets, then the first rule whose
    clauses all hold. Never raises (an exception inside, say from a caller's Mapping, answers ``miss``).
    Returns None when the flag has too many clauses to be worth generating."""
    if sum(len(c) for c, _ in rules) > MAX_GENERATED_CLAUSES:
        return None
    names: dict[str, Any] = {
        "SLOW": _slow,
        "MAPPING": _mapping,
        "MISS": miss,
        "LOOKUP": targets.get,
        "__builtins__": {"dict": dict, "Exception": Exception},
    }
    source = rules_source(rules, names, targets=bool(targets))
    exec(compile(source, "<banditflags rules>", "exec"), names)  # names only, see module doc
    return names["evaluate"]
