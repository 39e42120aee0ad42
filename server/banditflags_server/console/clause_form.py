"""The indexed form fields of the console's targeting editors (a flag's targets and rules, a segment's
clauses and units), without JavaScript: reading them into a *draft* (the text as typed, so a refused or
unsaved form shows what was typed), turning a draft into the body the HTTP API takes, the editing
buttons (add, remove, move), and the API's error paths mapped to the fields.

Field names are the API's paths with ``-`` for ``[i]`` and ``.``: ``rules-2-clauses-0-op`` is
``rules[2].clauses[0].op``. Values are one per line; what they mean is the server's to check
(:mod:`~banditflags_server.api.targeting`): this module only reads numbers and JSON literals where the
operator takes them, and passes anything else on as text for the server to refuse with its message.

>>> values_json("gte", "18\\nabc"), values_json("in", 'us\\n"18"\\n18\\ntrue')
([18, 'abc'], ['us', '18', 18, True])
>>> values_text("in", ["us", "18", 18, True])
'us\\n"18"\\n18\\ntrue'
>>> field_name("rules[2].clauses[0].values[1]"), field_name("targets[0].units[3]")
(('rules-2-clauses-0-values', 'value 2'), ('targets-0-units', 'unit 4'))
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, get_args

from banditflags_server.api.schemas import MAX_CLAUSES, Operator

#: The operators of DESIGN.md §9, as the server's schema lists them (the pickers' options).
OPERATORS: tuple[str, ...] = get_args(Operator)
_NUMBERS = frozenset({"lt", "lte", "gt", "gte", "before", "after"})
_INDEXED = re.compile(r"^(?P<head>.*?)-(?P<i>[0-9]{1,4})-(?P<rest>.+)$")
_PATH_PART = re.compile(r"\[([0-9]+)\]")
#: Lists whose items' errors are shown on the list's field (one textarea or input per list).
_ITEM_FIELDS = {
    "values": "value",
    "units": "unit",
    "weights": "weight",
    "included": "unit",
    "excluded": "unit",
}


# -- values ------------------------------------------------------------------------------------------


def _literal(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (str, bool, int, float)) else raw


def _value(op: str, raw: str) -> Any:
    if raw.startswith('"'):  # a JSON string, for any operator: text that could not be typed plainly
        quoted = _literal(raw)
        if isinstance(quoted, str):
            return quoted
    if op == "in":
        return _literal(raw)
    if op in _NUMBERS:
        value = _literal(raw)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else raw
    return raw


def values_json(op: str, text: str) -> list[Any]:
    """A clause's values from its textarea (one per line): numbers for the comparisons, JSON literals for
    ``in`` (``"18"`` in quotes is the text 18), the rest as text; a line in double quotes is a JSON
    string for every operator (spaces at its ends, ``""``)."""
    return [_value(op, line.strip()) for line in text.splitlines() if line.strip()]


def _shown(op: str, v: Any) -> str:
    if not isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v and v == v.strip() and v.splitlines() == [v] and _value(op, v) == v:
        return v
    text = json.dumps(v, ensure_ascii=False)
    return text if text.splitlines() == [text] else json.dumps(v)


def values_text(op: str, values: list[Any]) -> str:
    """The textarea's text of stored values (the inverse of :func:`values_json`)."""
    return "\n".join(_shown(op, v) for v in values)


def lines(text: str) -> list[str]:
    """Unit ids from a textarea: one per line, blank lines left out."""
    return [line.strip() for line in text.splitlines() if line.strip()]


# -- drafts ------------------------------------------------------------------------------------------


def indexed(form: dict[str, str], head: str) -> list[dict[str, str]]:
    """The rows ``{head}-{i}-{name}`` of a form, in index order (gaps closed), each ``{name: value}``."""
    rows: dict[int, dict[str, str]] = {}
    for name, value in form.items():
        m = _INDEXED.match(name)
        if m and m["head"] == head:
            rows.setdefault(int(m["i"]), {})[m["rest"]] = value
    return [rows[i] for i in sorted(rows)]


def clauses_draft(row: dict[str, str]) -> list[dict[str, Any]]:
    """The clause rows of one rule (or segment) form row."""
    return [
        {
            "attribute": c.get("attribute", "").strip(),
            "op": c.get("op", "in"),
            "values": c.get("values", ""),
            "negate": c.get("negate", "") == "on",
        }
        for c in indexed(row, "clauses")
    ]


def clauses_from_json(clauses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored clauses as clause rows."""
    return [
        {
            "attribute": c.get("attribute", ""),
            "op": c["op"],
            "values": values_text(c["op"], c.get("values", [])),
            "negate": bool(c.get("negate")),
        }
        for c in clauses
    ]


def clauses_body(clauses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Clause rows as the API's clause objects (an empty attribute is left out for the server to name)."""
    out = []
    for c in clauses:
        body: dict[str, Any] = {"op": c["op"], "values": values_json(c["op"], c["values"])}
        if c["attribute"] and c["op"] != "in_segment":
            body["attribute"] = c["attribute"]
        if c["negate"]:
            body["negate"] = True
        out.append(body)
    return out


def new_clause() -> dict[str, Any]:
    """An empty clause row."""
    return {"attribute": "", "op": "in", "values": "", "negate": False}


# -- editing buttons ---------------------------------------------------------------------------------


def _index(text: str, size: int) -> int | None:
    return int(text) if text.isdigit() and int(text) < size else None


def edit_list(items: list[Any], action: str, make: Any) -> bool:
    """Apply ``add`` / ``remove-i`` / ``up-i`` / ``down-i`` to ``items``; whether it was one of them."""
    verb, _, where = action.partition("-")
    i = _index(where, len(items))
    if verb == "add" and not where:
        items.append(make())
    elif verb == "remove" and i is not None:
        del items[i]
    elif verb == "up" and i is not None and i > 0:
        items[i - 1], items[i] = items[i], items[i - 1]
    elif verb == "down" and i is not None and i + 1 < len(items):
        items[i], items[i + 1] = items[i + 1], items[i]
    else:
        return verb in ("up", "down") and i is not None  # moving the first up: nothing to do
    return True


def edit_clauses(clauses: list[dict[str, Any]], action: str) -> bool:
    """``add`` (up to the schema's limit) or ``remove-j`` on a clause list."""
    if action == "add" and len(clauses) >= MAX_CLAUSES:
        return True
    return edit_list(clauses, action, new_clause)


# -- stale forms -------------------------------------------------------------------------------------


def digest(value: Any) -> str:
    """A short digest of what a form was loaded from (its hidden ``base``): a save whose base no longer
    matches the stored value is refused rather than overwriting someone else's change."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


STALE = (
    "was changed by someone else since this form was loaded. Nothing was saved: reload the page to see it."
)


# -- errors ------------------------------------------------------------------------------------------


def field_name(path: str) -> tuple[str, str]:
    """The form field of an API error path, and what to say before its message (``value 2``)."""
    name = _PATH_PART.sub(r"-\1", path).replace(".", "-").replace("-serve-", "-")
    m = re.fullmatch(r"(?P<field>.*?(?:^|-)(?P<list>[a-z]+))-(?P<k>[0-9]+)", name)
    if m and m["list"] in _ITEM_FIELDS:
        return m["field"], f"{_ITEM_FIELDS[m['list']]} {int(m['k']) + 1}"
    return name, ""


def field_errors(problems: list[tuple[str | None, str]], general: str = "_") -> dict[str, str]:
    """The API's ``(path, message)`` problems by form field (the first per field; unnamed: ``general``)."""
    out: dict[str, str] = {}
    for path, message in problems:
        name, prefix = field_name(path) if path else (general, "")
        out.setdefault(name, f"{prefix}: {message}" if prefix else message)
    return out
