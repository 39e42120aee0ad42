"""A flag's targets and rules from a terminal (issue 12): ``flags show`` prints them, with each bandit
rule's weights and estimates from the flag's ``rules_report``; ``flags rules`` prints or replaces them;
``flags set-rule`` adds or replaces one rule from clauses as typed, ``flags remove-rule`` removes one;
``flags target`` and ``flags untarget`` pin units to a variant or release them.

Changes are read-modify-write over ``PATCH /v1/flags/{key}`` (which replaces the whole ``targets`` or
``rules`` list): two operators changing the same flag's targets at the same moment, the last one wins.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from banditflags_server.cli.api import (
    OK,
    REJECTED,
    USAGE,
    Api,
    CliError,
    change,
    read_json,
    read_modify_write,
    table,
)
from banditflags_server.cli.clauses import ClauseSyntaxError, format_rule, format_serve, parse_clauses

__all__ = ["audited", "print_targeting", "remove_rule", "rules", "set_rule", "target", "untarget"]

SHOWN_UNITS = 8


def _pct(x: Any) -> str:
    return "-" if x is None else f"{float(x) * 100:.1f}%"


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.4g}"


def _units(units: list[str]) -> str:
    shown = ", ".join(units[:SHOWN_UNITS])
    more = len(units) - SHOWN_UNITS
    return shown + (f" and {more:,} more" if more > 0 else "")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def audited(field: str, value: Any) -> str:
    """A changed field of an audit entry, short: rules by id, targets by variant and unit count.

    >>> audited("rules", [{"id": "us"}, {"id": "staff"}])
    '[us, staff]'
    >>> audited("targets", [{"variant": "green", "units": ["a", "b"]}])
    '[green: 2 units]'
    >>> audited("exploration", 0.2)
    '0.2'
    """
    if field == "rules" and isinstance(value, list):
        return "[" + ", ".join(str(r.get("id")) for r in value if isinstance(r, dict)) + "]"
    if field == "targets" and isinstance(value, list):
        parts = [
            f"{t.get('variant')}: {_plural(len(t.get('units') or []), 'unit')}"
            for t in value
            if isinstance(t, dict)
        ]
        return "[" + ", ".join(parts) + "]"
    return json.dumps(value)


def print_targeting(flag: dict[str, Any], out: TextIO) -> None:
    """The flag's targets, its rules in order, and each rule's counts (bandit rules: their estimates)."""
    targets: list[dict[str, Any]] = flag.get("targets") or []
    rules_: list[dict[str, Any]] = flag.get("rules") or []
    report = {r["id"]: r for r in flag.get("rules_report") or []}
    if not targets and not rules_ and not report:
        return
    variants = [v["key"] for v in flag["variants"]]
    if flag["state"] == "killed":
        print("\nkilled: targets and rules are kept but not served; every unit gets the control", file=out)
    if targets:
        print("\ntargets (before the rules):", file=out)
        for t in targets:
            print(f"  {t['variant']}: {_units(t['units'])}", file=out)
    if rules_:
        print("\nrules (in order; the first match wins, else the default allocation):", file=out)
        rows = []
        for i, r in enumerate(rules_, 1):
            serve = format_serve(r["serve"], variants)
            rep = report.get(r["id"]) or {}
            if rep.get("bandit") and rep.get("version") is not None:
                serve += f" (v{rep['version']})"
            n = sum(s.get("n", 0) for s in rep.get("stats") or [])
            rows.append([str(i), r["id"], format_rule(r), serve, f"{n:,}"])
        text = table(["#", "RULE", "WHEN", "SERVES", "EXPOSURES"], rows, right={0, 4})
        print("\n".join("  " + line for line in text.splitlines()), file=out)
    for rep in report.values():
        if rep.get("bandit"):
            _print_bandit_rule(rep, variants, out)
    others = [r for r in report.values() if r["id"] not in {x["id"] for x in rules_}]
    for rep in others:
        n = [s.get("n", 0) for s in rep.get("stats") or []]
        what = "targets" if rep["id"] == "target" else f"rule {rep['id']!r} (removed)"
        split = " ".join(f"{v}={k:,}" for v, k in zip(variants, n, strict=False))
        print(f"\n{what}: {sum(n):,} exposures ({split})", file=out)


def _print_bandit_rule(rep: dict[str, Any], variants: list[str], out: TextIO) -> None:
    weights = rep.get("weights") or []
    print(f"\nrule {rep['id']!r}: its own bandit, allocation v{rep.get('version')}", file=out)
    rows = []
    for i, s in enumerate(rep.get("stats") or []):
        ci = "-" if s.get("ci_low") is None else f"{_num(s['ci_low'])}..{_num(s['ci_high'])}"
        w = weights[i] if i < len(weights) else None
        name = s.get("variant") or (variants[i] if i < len(variants) else str(i))
        rows.append([name, f"{s.get('n', 0):,}", _num(s.get("mean")), ci, _pct(s.get("p_best")), _pct(w)])
    headers = ["VARIANT", "N", "MEAN", "95% CI", "P(BEST)", "WEIGHT"]
    print(table(headers, rows, right=set(range(1, len(headers)))), file=out)


# -- changes ----------------------------------------------------------------------------------------


def _patch(
    api: Api, args: argparse.Namespace, body: dict[str, Any], out: TextIO, done: str, etag: str | None = None
) -> int:
    """PATCH the flag (``If-Match: etag``, the flag ``body`` was computed from); print ``done`` and the
    targeting now (or the flag's JSON)."""
    request = ("PATCH", f"/v1/flags/{args.key}", body)
    return change(api, args, request, out, lambda f: f"{done}; now {_summary(f)}", if_match=etag)


def _summary(flag: dict[str, Any]) -> str:
    targets = flag.get("targets") or []
    units = sum(len(t["units"]) for t in targets)
    ids = [r["id"] for r in flag.get("rules") or []]
    rules_text = _plural(len(ids), "rule") + (f" ({', '.join(ids)})" if ids else "")
    return f"{rules_text}, {_plural(len(targets), 'target')} ({_plural(units, 'unit')})"


def rules(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """``flags rules KEY``: print the targets and rules as JSON; with ``--file``, replace them."""
    if not args.file:
        flag = api.call("GET", f"/v1/flags/{args.key}")
        doc = {"targets": flag.get("targets") or [], "rules": flag.get("rules") or []}
        print(json.dumps(doc, indent=2), file=out)
        return OK
    doc = read_json(args.file)
    if isinstance(doc, list):
        doc = {"rules": doc}
    if not isinstance(doc, dict) or not doc or set(doc) - {"targets", "rules"}:
        raise CliError(
            USAGE,
            '--file: expected {"targets": [...], "rules": [...]} (either or both) or a list of rules',
        )
    replaced = " and ".join(k for k in ("targets", "rules") if k in doc)
    return _patch(api, args, dict(doc), out, f"{args.key}: {replaced} replaced")


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    if args.bandit:
        return {"bandit": True}
    if args.variant:
        return {"variant": args.variant}
    try:
        weights = [float(w) for w in args.split.split(",")]
    except ValueError:
        raise CliError(
            USAGE, f"--split {args.split!r}: expected one number per variant, like 50,50,0"
        ) from None
    return {"weights": weights}


@read_modify_write
def set_rule(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """``flags set-rule KEY ID --clause ... (--bandit | --variant V | --split W,...)``: add the rule (at
    the end, or ``--first`` / ``--before ID``), or replace the rule with that id (in place unless told)."""
    try:
        clauses = [{**c, "negate": c.get("negate", False)} for c in parse_clauses(args.clause or [])]
        rule = {"id": args.rule, "clauses": clauses, "serve": _serve(args)}
    except ClauseSyntaxError as exc:
        raise CliError(USAGE, str(exc)) from None
    if not rule["clauses"]:
        raise CliError(
            USAGE, "a rule needs clauses: --clause 'ATTRIBUTE OP VALUE,...' (repeat: all must match)"
        )
    flag = api.call("GET", f"/v1/flags/{args.key}")
    current: list[dict[str, Any]] = flag.get("rules") or []
    ids = [r["id"] for r in current]
    if args.before is not None and (args.before not in ids or args.before == args.rule):
        raise CliError(
            USAGE, f"--before {args.before!r}: not another rule of {args.key} ({', '.join(ids) or 'none'})"
        )
    at = ids.index(args.rule) if args.rule in ids else len(current)
    after = [r for r in current if r["id"] != args.rule]
    if args.first:
        at = 0
    elif args.before is not None:
        at = [r["id"] for r in after].index(args.before)
    after.insert(min(at, len(after)), rule)
    if after == current:
        print(f"{args.key}: rule {args.rule!r} is already so; nothing to do", file=out)
        return OK
    old = next((r for r in current if r["id"] == args.rule), None)
    verb = "added" if old is None else ("moved" if old == rule else "replaced")
    return _patch(api, args, {"rules": after}, out, f"{args.key}: rule {args.rule!r} {verb}", flag["etag"])


@read_modify_write
def remove_rule(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """``flags remove-rule KEY ID``: its units go to the next matching rule or the default allocation."""
    flag = api.call("GET", f"/v1/flags/{args.key}")
    current: list[dict[str, Any]] = flag.get("rules") or []
    if not any(r["id"] == args.rule for r in current):
        print(f"{args.key}: no rule {args.rule!r}; nothing to do", file=out)
        return OK
    after = [r for r in current if r["id"] != args.rule]
    return _patch(api, args, {"rules": after}, out, f"{args.key}: rule {args.rule!r} removed", flag["etag"])


def _without(targets: list[dict[str, Any]], units: set[str]) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        kept = [u for u in t["units"] if u not in units]
        if kept:
            out.append({"variant": t["variant"], "units": kept})
    return out


def _unique(units: list[str]) -> list[str]:
    return list(dict.fromkeys(units))


@read_modify_write
def target(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """``flags target KEY VARIANT UNIT...``: serve VARIANT to these units (moved from other targets)."""
    flag = api.call("GET", f"/v1/flags/{args.key}")
    variants = [v["key"] for v in flag["variants"]]
    if args.variant not in variants:
        raise CliError(REJECTED, f"{args.variant!r} is not a variant of {args.key} ({', '.join(variants)})")
    units = _unique(args.units)
    before: list[dict[str, Any]] = flag.get("targets") or []
    after = _without(before, set(units))
    existing = next((t for t in after if t["variant"] == args.variant), None)
    if existing is None:
        after.append({"variant": args.variant, "units": units})
    else:
        existing["units"].extend(units)
    if _normal(after) == _normal(before):
        print(f"{args.key}: already served {args.variant!r} to {_units(units)}; nothing to do", file=out)
        return OK
    done = f"{args.key}: {_units(units)} -> {args.variant}"
    return _patch(api, args, {"targets": after}, out, done, flag["etag"])


def _normal(targets: list[dict[str, Any]]) -> dict[str, set[str]]:
    return {t["variant"]: set(t["units"]) for t in targets}


@read_modify_write
def untarget(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    """``flags untarget KEY UNIT...``: these units go back to the rules and the default allocation."""
    flag = api.call("GET", f"/v1/flags/{args.key}")
    before: list[dict[str, Any]] = flag.get("targets") or []
    targeted = {u for t in before for u in t["units"]}
    units = _unique(args.units)
    found = [u for u in units if u in targeted]
    if not found:
        print(f"{args.key}: {_units(units)} not targeted; nothing to do", file=out)
        return OK
    missing = [u for u in units if u not in targeted]
    note = f" ({_units(missing)} were not targeted)" if missing else ""
    done = f"{args.key}: released {_units(found)}{note}"
    return _patch(api, args, {"targets": _without(before, set(found))}, out, done, flag["etag"])


def add_parsers(
    acts: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    change: argparse.ArgumentParser,
) -> None:
    """Register ``rules``, ``target`` and ``untarget`` on ``flags``."""
    rp = acts.add_parser(
        "rules",
        parents=[common, change],
        help="print a flag's targets and rules as JSON, or replace them (--file)",
        description='Without --file: print {"targets": [...], "rules": [...]} (edit it and give it back). '
        "With --file: replace the targets and/or rules the document holds (a list: the rules); "
        'send {"rules": []} to remove every rule. Shapes: docs/targeting.md.',
    )
    rp.add_argument("key")
    rp.add_argument("--file", help='a JSON document {"targets": [...], "rules": [...]} (- for stdin)')
    sp = acts.add_parser(
        "set-rule",
        parents=[common, change],
        help="add a rule, or replace the rule with that id, from clauses as typed",
        description="Add a rule at the end (or --first, --before ID), or replace the rule with that id in "
        "place. Clauses as in `segments create`: --clause 'country in DE,AT' (repeat: all must match).",
    )
    sp.add_argument("key")
    sp.add_argument("rule", metavar="ID", help="the rule's id (^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$)")
    sp.add_argument(
        "--clause",
        action="append",
        metavar="'ATTR OP VALUES'",
        help="a clause, e.g. 'country in DE,AT'; repeat (all must match)",
    )
    what = sp.add_mutually_exclusive_group(required=True)
    what.add_argument("--bandit", action="store_true", help="serve the rule's own bandit (a segment bandit)")
    what.add_argument("--variant", help="serve this variant")
    what.add_argument("--split", help="serve a fixed split: one weight per variant, e.g. 50,50,0")
    where = sp.add_mutually_exclusive_group()
    where.add_argument("--first", action="store_true", help="put it first")
    where.add_argument("--before", metavar="ID", help="put it before this rule")
    xp = acts.add_parser("remove-rule", parents=[common, change], help="remove one rule of a flag")
    xp.add_argument("key")
    xp.add_argument("rule", metavar="ID")
    tp = acts.add_parser(
        "target", parents=[common, change], help="serve a variant to these units (individual targets)"
    )
    tp.add_argument("key")
    tp.add_argument("variant")
    tp.add_argument("units", nargs="+", metavar="UNIT")
    up = acts.add_parser(
        "untarget", parents=[common, change], help="release units from the flag's individual targets"
    )
    up.add_argument("key")
    up.add_argument("units", nargs="+", metavar="UNIT")
