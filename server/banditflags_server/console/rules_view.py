"""What the flag page shows of a flag's targets and rules (issue 12): each rule in order with its clauses
in words and what it serves, and per arm its served weight and estimates from the flag's
``rules_report`` (a bandit rule: its own table's weights and version); the targets with their units and
their stats. Also the editor's starting rows (:func:`draft_from_flag`) and the digest it is based on.
"""

from __future__ import annotations

from typing import Any

from banditflags_server.console import clause_form as cf
from banditflags_server.records import Flag

__all__ = ["clause_text", "digest", "draft_from_flag", "targeting_view"]

#: How many of a clause's values, and of a target's units, the flag page lists (the editor has all).
SHOWN_VALUES = 10
SHOWN_UNITS = 50


def clause_text(c: dict[str, Any]) -> str:
    """A clause in words: ``country in us, ca``; ``not (plan in "free")``; ``in segment beta``.

    >>> clause_text({"attribute": "age", "op": "gte", "values": [18], "negate": True})
    'not (age gte 18)'
    >>> clause_text({"attribute": "id", "op": "in", "values": list(range(30))})
    'id in 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … (30 values)'
    """
    given = c.get("values", [])
    values = ", ".join(cf.values_text(c["op"], given[:SHOWN_VALUES]).splitlines())
    if len(given) > SHOWN_VALUES:
        values += f", … ({len(given):,} values)"
    if c["op"] == "in_segment":
        text = f"in segment {values}"
    elif c["op"] == "exists":
        text = f"{c.get('attribute', '')} exists"
    else:
        text = f"{c.get('attribute', '')} {c['op']} {values}"
    return f"not ({text})" if c.get("negate") else text


def _serve_text(serve: dict[str, Any], labels: list[str]) -> str:
    if serve.get("bandit"):
        return "its own bandit"
    if "weights" in serve:
        total = sum(serve["weights"]) or 1.0
        return "split " + ", ".join(
            f"{k} {w / total:.0%}" for k, w in zip(labels, serve["weights"], strict=False)
        )
    return f"variant {serve.get('variant', '')}"


def _served(serve: dict[str, Any], report: dict[str, Any] | None, labels: list[str]) -> list[float | None]:
    if serve.get("bandit"):
        weights = report.get("weights") if report else None
        return list(weights) if weights else [None] * len(labels)
    if "weights" in serve:
        total = sum(serve["weights"]) or 1.0
        return [w / total for w in serve["weights"]]
    return [1.0 if k == serve.get("variant") else 0.0 for k in labels]


def _arms(
    labels: list[str], palette: list[str], served: list[float | None], report: dict[str, Any] | None
) -> list[dict[str, Any]]:
    stats = report["stats"] if report else [None] * len(labels)
    return [
        {"key": k, "colour": palette[i], "served": served[i], "stats": stats[i]} for i, k in enumerate(labels)
    ]


def targeting_view(flag: Flag, report: list[dict[str, Any]], palette: list[str]) -> dict[str, Any]:
    """The flag page's targets and rules, each with its arms (served weight, stats)."""
    labels = [v["key"] for v in flag.variants]
    by_id = {r["id"]: r for r in report}
    rules = []
    for r in flag.rules:
        rep = by_id.get(r["id"])
        rules.append(
            {
                "id": r["id"],
                "clauses": [clause_text(c) for c in r["clauses"]],
                "serve": _serve_text(r["serve"], labels),
                "bandit": bool(r["serve"].get("bandit")),
                "version": rep.get("version") if rep else None,
                "exposures": sum(s["n"] for s in rep["stats"]) if rep else 0,
                "arms": _arms(labels, palette, _served(r["serve"], rep, labels), rep),
            }
        )
    colour = dict(zip(labels, palette, strict=True))
    targets = [
        {
            "variant": t["variant"],
            "colour": colour.get(t["variant"]),
            "units": t["units"][:SHOWN_UNITS],
            "more": max(0, len(t["units"]) - SHOWN_UNITS),
        }
        for t in flag.targets
    ]
    target_rep = by_id.get("target")
    served_t: list[float | None] = [None] * len(labels)
    current = {r["id"] for r in flag.rules} | {"target"}
    return {
        "rules": rules,
        "targets": targets,
        "target_arms": _arms(labels, palette, served_t, target_rep) if target_rep else [],
        "deleted": [r["id"] for r in report if r["id"] not in current],
    }


def digest(flag: Flag) -> str:
    """A short digest of the flag's targets and rules (the editor's base, to refuse a stale save)."""
    return cf.digest([flag.targets, flag.rules])


# -- drafts ------------------------------------------------------------------------------------------


def draft_from_flag(flag: Flag) -> dict[str, Any]:
    """The editor's rows for the flag as stored."""
    rules = []
    for r in flag.rules:
        serve = r["serve"]
        kind = "bandit" if serve.get("bandit") else "weights" if "weights" in serve else "variant"
        rules.append(
            {
                "id": r["id"],
                "serve": kind,
                "variant": serve.get("variant", ""),
                "weights": ", ".join(f"{w:g}" for w in serve.get("weights", [])),
                "clauses": cf.clauses_from_json(r["clauses"]),
            }
        )
    targets = [{"variant": t["variant"], "units": "\n".join(t["units"])} for t in flag.targets]
    return {"base": digest(flag), "targets": targets, "rules": rules}
