"""msgspec's validation errors in the protocol's terms: the field as a dotted path, a message saying what
the field must be (docs/protocol.md "Errors").

msgspec stops at the first problem (``Expected `int` >= 1 - at `$.exposures[3].count```). :func:`explain`
turns it into ``("exposures[3].count", "must be an integer in 1..1000000000000")``, the message made
from the field's type and constraints (or its ``Meta(extra={"message": ...})``), and, only once a
request has failed, looks again field by field and item by item so that every bad field is listed, as
the hand-written validators did.

>>> class Body(msgspec.Struct, forbid_unknown_fields=True):
...     counts: list[Annotated[int, msgspec.Meta(ge=1)]]
>>> value = {"counts": [0, 2, -1], "x": 1}
>>> try:
...     msgspec.convert(value, Body)
... except msgspec.ValidationError as exc:
...     print(exc)
...     explain(exc, value, Body)
Expected `int` >= 1 - at `$.counts[0]`
[('x', 'unknown field'), ('counts[0]', 'must be an integer ≥ 1'), ('counts[2]', 'must be an integer ≥ 1')]
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

__all__ = ["MAX_PROBLEMS", "Problem", "explain", "message_for", "translate"]

#: Problems listed at the most (the error body shows 50).
MAX_PROBLEMS = 50

Problem = tuple[str | None, str]

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>.*)`$", re.S)
_NOT_A_TYPE = (type(None), msgspec.UnsetType)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _parts(tp: Any) -> tuple[Any, list[msgspec.Meta]]:
    """The type under its ``Annotated`` layers and their :class:`msgspec.Meta` (outermost last)."""
    metas: list[msgspec.Meta] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        metas[:0] = [m for m in args[1:] if isinstance(m, msgspec.Meta)]
        tp = args[0]
    return tp, metas


def _extra(metas: list[msgspec.Meta], name: str) -> Any:
    for m in reversed(metas):
        if m.extra and name in m.extra:
            return m.extra[name]
    return None


def _members(tp: Any) -> tuple[Any, ...]:
    """A union's members (not ``None`` or ``UNSET``); ``(tp,)`` for anything else."""
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(a for a in get_args(tp) if a not in _NOT_A_TYPE)
    return (tp,)


def _struct(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct a value of type ``tp`` decodes into when it is an object (None if none or ambiguous)."""
    found = [m for m in (_parts(t)[0] for t in _members(_parts(tp)[0])) if _is_struct(m)]
    return found[0] if len(found) == 1 else None


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _list(tp: Any) -> Any:
    """The ``list[...]`` (with its constraints) a value of type ``tp`` decodes into when it is an array."""
    if get_origin(_parts(tp)[0]) is list:
        return tp
    found = [m for m in _members(_parts(tp)[0]) if get_origin(_parts(m)[0]) is list]
    return found[0] if len(found) == 1 else None


def _child(tp: Any, name: str | None, index: int | None) -> Any:
    """The type at ``.name`` or ``[index]`` inside ``tp`` (None where the path leaves the schema)."""
    if name is not None:
        struct = _struct(tp)
        if struct is None:
            return None
        for f in msgspec.structs.fields(struct):
            if f.encode_name == name:
                return f.type
        return None
    lst = _list(tp)
    return get_args(_parts(lst)[0])[0] if lst is not None else None


def _at(tp: Any, path: str) -> tuple[Any, str]:
    """The type at a msgspec path (``.variants[1].key``) inside ``tp``, and the path as our field."""
    field = ""
    for name, index in _SEGMENT.findall(path):
        tp = _child(tp, name or None, int(index) if index else None)
        field = _join(field, name) if name else f"{field}[{index}]"
    return tp, field


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _number_phrase(base: Any, m: dict[str, Any]) -> str:
    noun = "an integer" if base is int else "a number"
    lo, hi = m.get("ge", m.get("gt")), m.get("le", m.get("lt"))
    if lo is not None and hi is not None:
        if base is int and "gt" not in m and "lt" not in m:
            return f"be {noun} in {_num(lo)}..{_num(hi)}"
        left, right = ("(" if "gt" in m else "["), (")" if "lt" in m else "]")
        return f"be {noun} in {left}{_num(lo)}, {_num(hi)}{right}"
    if lo is not None:
        return f"be {noun} {'>' if 'gt' in m else '≥'} {_num(lo)}"
    if hi is not None:
        return f"be {noun} {'<' if 'lt' in m else '≤'} {_num(hi)}"
    return f"be {noun}"


def _phrase(tp: Any) -> str:
    """What a value of type ``tp`` must be, without the leading "must" (``be an integer ≥ 1``)."""
    base, metas = _parts(tp)
    given = _extra(metas, "message")
    if isinstance(given, str):
        return given.removeprefix("must ")
    m: dict[str, Any] = {}
    for meta in metas:  # the outer constraints win, as in msgspec
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            if getattr(meta, name) is not None:
                m[name] = getattr(meta, name)
    members = _members(base)
    if len(members) > 1 or members[0] is not base:
        nullable = type(None) in get_args(base)
        numbers = [a for a in members if _parts(a)[0] in (int, float)]
        if len(numbers) == len(members) and len(members) > 1:  # "int | float" kept as given: a number
            members = tuple(a for a in members if _parts(a)[0] is float)
        phrases = [*(_phrase(a) for a in members), *(["be null"] if nullable else [])]
        out = phrases[0]
        for p in phrases[1:]:  # "be a string or a number or null"
            out += " or " + (p[3:] if p.startswith("be ") and out.startswith("be ") else p)
        return out
    if base is bool:
        return "be true or false"
    if base in (int, float):
        return _number_phrase(base, m)
    if base is str:
        if "pattern" in m:
            return f"match {m['pattern']}"
        if "max_length" in m:
            return f"be a string of at most {m['max_length']} characters"
        return "be a non-empty string" if m.get("min_length") == 1 else "be a string"
    if get_origin(base) is Literal:
        return "be one of " + ", ".join(str(v) for v in get_args(base))
    if get_origin(base) is list:
        lo, hi = m.get("min_length"), m.get("max_length")
        if lo is not None and hi is not None:
            return f"be a list of {lo}..{hi} items"
        if hi is not None:
            return f"be a list of at most {hi} items"
        return f"be a list of at least {lo} items" if lo else "be a list"
    if base is dict or get_origin(base) is dict or _is_struct(base):
        return "be an object"
    return "be JSON"


def message_for(tp: Any) -> str:
    """The message for a bad value of type ``tp``.

    >>> message_for(Annotated[float, msgspec.Meta(ge=0.5, lt=1)] | None)
    'must be a number in [0.5, 1) or null'
    """
    return "must " + _phrase(tp)


def translate(exc: msgspec.ValidationError, root: Any, prefix: str = "") -> Problem:
    """One msgspec error about a value of type ``root`` (a Struct: a body) as ``(field, message)``;
    ``prefix`` is the value's own field. ``field`` is None for the body itself."""
    text = str(exc)
    found = _AT.search(text)
    path = found["path"] if found else ""
    message = text[: found.start()] if found else text
    tp, field = _at(root, path)
    full = _join(prefix, field) if field else prefix
    for pattern, what in ((_UNKNOWN, "unknown field"), (_MISSING, "is required")):
        named = pattern.match(message)
        if named:
            return _join(full, named["name"]), what
    if tp is None:  # not a path of the schema: msgspec's own words
        return full or None, message
    shorthand = _extra(_parts(tp)[1], "shorthand")
    if shorthand and message.startswith("Expected `str` "):
        # A plain string that stands for an object's field (a variant's key) is wrong as that field.
        sub = _child(tp, shorthand, None)
        return _join(full, shorthand), message_for(sub)
    if not full:
        return None, "request body must be a JSON object"
    return full, message_for(tp)


def explain(exc: msgspec.ValidationError, value: Any, tp: Any, limit: int = MAX_PROBLEMS) -> list[Problem]:
    """Every problem of ``value`` as a ``tp`` (``exc``: msgspec's first one), at most ``limit``.

    Looks field by field and item by item (only objects and arrays the schema describes, one union
    member at most), so each bad field is named once; the first problem msgspec found is kept when the
    closer look finds nothing more precise."""
    out: list[Problem] = []
    _collect(value, tp, "", out, limit)
    return out or [translate(exc, tp)]


def _collect(value: Any, tp: Any, field: str, out: list[Problem], limit: int) -> None:
    try:
        msgspec.convert(value, tp)
        return
    except msgspec.ValidationError as exc:
        first = translate(exc, tp, field)
    before = len(out)
    struct = _struct(tp)
    lst = _list(tp)
    if struct is not None and isinstance(value, dict):
        fields = msgspec.structs.fields(struct)
        if struct.__struct_config__.forbid_unknown_fields:
            known = {f.encode_name for f in fields}
            out.extend((_join(field, str(k)), "unknown field") for k in value if k not in known)
        for f in fields:
            if len(out) >= limit:
                break
            if f.encode_name in value:
                _collect(value[f.encode_name], f.type, _join(field, f.encode_name), out, limit)
            elif f.required:
                out.append((_join(field, f.encode_name), "is required"))
    elif lst is not None and isinstance(value, list):
        base, metas = _parts(lst)
        # The list's own constraints (its length) before its items.
        lo = max((m.min_length for m in metas if m.min_length is not None), default=0)
        hi = min((m.max_length for m in metas if m.max_length is not None), default=len(value))
        if not lo <= len(value) <= hi:
            out.append(first)
            return
        item = get_args(base)[0]
        for i, x in enumerate(value):
            if len(out) >= limit:
                break
            _collect(x, item, f"{field}[{i}]", out, limit)
    if len(out) == before:
        out.append(first)
    del out[limit:]
