"""Generate tests/vectors/rules.json, the golden vectors of DESIGN.md §9 targeting.

Every expectation below is written by hand from docs/targeting.md, not computed by the SDK, so the
file is a specification another SDK can be checked against (tests/sdk/test_rules_vectors.py checks
ours). What is computed here is only what §4 already fixes: a fixed split's table (largest-remainder
rounding, done with Fractions) and a unit's bucket (murmur3 through mmh3, as make_bucketing_vectors.py
cross-checks).

Each ``cases`` entry gives a flag, a unit id, attributes (absent keys are missing attributes) and the
outcome: ``rule`` (a rule id, ``"target"``, or null for the flag's default allocation), ``serve``
(``target``, ``variant``, ``weights``, ``bandit`` or null), ``variant`` (the served variant's key when
targeting fixes it: targets, fixed variants and fixed splits) and, for fixed splits, ``bucket``.
``invalid`` entries are flags (with their config's segments) that must be rejected, with the path of
the offending field relative to the flag; ``segment_problems`` the paths a segments validator reports.

Run: .venv/bin/python tests/vectors/make_rules_vectors.py   (deterministic)
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import mmh3

OUT = Path(__file__).with_name("rules.json")
VARIANTS = ["control", "green", "blue"]
SALT = "3f0c9a1e5d7b2a4c"
MISSING: Any = object()  # the attribute is absent from the context

# -- one operator per flag: (op, values, [(attribute value, matches?), ...]) ------------------------
# Each row is also replayed against the same clause with "negate": true, expecting the opposite,
# except for a missing attribute (absent, null, or an object), which matches neither way.

SEMVER_ORDER = [  # SemVer 2.0.0 §11, lowest first
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]
NOT_A_VALUE = [(MISSING, False), (None, False), ({"k": "v"}, False)]

OPERATOR_TABLES: list[tuple[str, str, list[Any], list[tuple[Any, bool]]]] = [
    (
        "in-mixed",
        "in",
        ["us", "ca", 7, 2.5, True],
        [
            ("us", True),
            ("US", False),
            ("", False),
            (["fr", "ca"], True),
            (["fr"], False),
            ([], False),
            ([None, "us"], True),
            ([["us"]], False),
            ([{"k": "us"}], False),
            (7, True),
            (7.0, True),
            (2.5, True),
            ("7", False),
            (True, True),
            (False, False),
            (1, False),
            *NOT_A_VALUE,
        ],
    ),
    (
        "in-numbers",
        "in",
        [1, 0],
        [
            (1, True),
            (1.0, True),
            (0, True),
            (-0.0, True),
            (True, False),
            (False, False),
            ("1", False),
            (2, False),
        ],
    ),
    (
        "starts-with",
        "starts_with",
        ["ab", "x-"],
        [
            ("abc", True),
            ("ab", True),
            ("a", False),
            ("x-1", True),
            ("Xab", False),
            (["zz", "x-y"], True),
            (12, False),
            (True, False),
            ("", False),
            *NOT_A_VALUE,
        ],
    ),
    ("starts-with-empty", "starts_with", [""], [("", True), ("anything", True), (5, False), ([], False)]),
    (
        "ends-with",
        "ends_with",
        ["@corp.test"],
        [
            ("ann@corp.test", True),
            ("ann@corp.test.evil", False),
            ("ANN@CORP.TEST", False),
            ("@corp.test", True),
            (["a@x.io", "b@corp.test"], True),
            *NOT_A_VALUE,
        ],
    ),
    (
        "contains",
        "contains",
        ["+test", "qa"],
        [
            ("ann+test@x.io", True),
            ("qa-team", True),
            ("squad", False),
            ("ann@x.io", False),
            (["a", "b+test"], True),
            (7, False),
            *NOT_A_VALUE,
        ],
    ),
    ("contains-unicode", "contains", ["é"], [("café", True), ("cafe", False), ("日本語é", True)]),
    (
        "matches",
        "matches",
        ["^[a-z]+@corp\\.test$", "^admin-[0-9]{2,4}$"],
        [
            ("ann@corp.test", True),
            ("Ann@corp.test", False),
            ("admin-123", True),
            ("admin-1", False),
            ("xadmin-12", False),
            (["x", "admin-99"], True),
            (5, False),
            *NOT_A_VALUE,
        ],
    ),
    # re.search semantics (unanchored), and the 1,024-character subject bound.
    (
        "matches-search",
        "matches",
        ["corp", "a$"],
        [("my-corp-x", True), ("a" * 1024, True), ("a" * 1025, False), ("b", False)],
    ),
    (
        "lt",
        "lt",
        [10, 3],
        [
            (9, True),
            (9.999, True),
            (10, False),
            (10.0, False),
            (11, False),
            (-1e300, True),
            ("9", False),
            (True, False),
            (False, False),
            ([20, 5], True),
            ([20], False),
            ([], False),
            *NOT_A_VALUE,
        ],
    ),
    ("lte", "lte", [10], [(10, True), (10.0, True), (10.5, False), (-3, True), ("10", False)]),
    ("gt", "gt", [10, 20], [(11, True), (10, False), (10.5, True), (25, True), (True, False)]),
    ("gte", "gte", [18], [(18, True), (17.99, False), (1e3, True), ("18", False), *NOT_A_VALUE]),
    (
        "semver-lt",
        "semver_lt",
        ["1.0.0-beta.2"],
        [
            *[(v, i < SEMVER_ORDER.index("1.0.0-beta.2")) for i, v in enumerate(SEMVER_ORDER)],
            ("0.9.9", True),
            ("v0.9", True),
            ("1", False),
            ("1.0.0-beta.2+build.7", False),
            ("1.0.0-beta.10", False),
            ("1.0.0-beta.1", True),
            ("01.0.0", False),
            ("1.0.0.0", False),
            ("1.0.0-beta.02", False),
            ("", False),
            (1, False),
            (["2.0.0", "0.1.0"], True),
            *NOT_A_VALUE,
        ],
    ),
    (
        "semver-gte",
        "semver_gte",
        ["2.0.0"],
        [
            ("2.0.0", True),
            ("2.0.0-rc.1", False),
            ("2.0.1", True),
            ("10.0.0", True),
            ("2.0.0+build", True),
            ("1.99.99", False),
            ("2", True),
            ("2.0", True),
            ("v2.0.0", True),
            ("V2.0.0", False),
            (" 2.0.0", False),
        ],
    ),
    (
        "semver-eq",
        "semver_eq",
        ["1.2.3"],
        [("1.2.3+abc", True), ("v1.2.3", True), ("1.2.3-0", False), ("1.2", False), ("1.2.3", True)],
    ),
    (
        "semver-gt",
        "semver_gt",
        ["1.0.0-alpha"],
        [
            ("1.0.0-alpha.1", True),
            ("1.0.0-alpha", False),
            ("1.0.0-0", False),
            ("1.0.0-alpha0", True),
            ("1.0.0", True),
        ],
    ),
    (
        "semver-lte",
        "semver_lte",
        ["1.0.0"],
        [("1.0.0-rc.1", True), ("1.0.0", True), ("1.0.1", False), ("0.0.0", True)],
    ),
    # Numeric identifiers sort below alphanumeric ones, alphanumeric ones in ASCII order.
    (
        "semver-prerelease",
        "semver_lt",
        ["1.0.0-a"],
        [
            ("1.0.0-1", True),
            ("1.0.0-99999999999999999999", True),
            ("1.0.0-A", True),
            ("1.0.0--", True),
            ("1.0.0-a", False),
            ("1.0.0-a.0", False),
            ("1.0.0-b", False),
        ],
    ),
    (
        "before",
        "before",
        ["2024-03-01T12:00:00+01:00"],  # 11:00:00Z, epoch 1709290800
        [
            ("2024-03-01T10:59:59Z", True),
            ("2024-03-01T11:00:00Z", False),
            ("2024-03-01T10:59:59.999Z", True),
            ("2024-03-01T11:00:00.000001Z", False),
            ("2024-03-01T12:00:00+01:00", False),
            ("2024-03-01T05:59:59-05:00", True),
            ("2024-03-01T10:59", True),
            ("2024-03-01", True),
            ("2024-03-01 10:00:00Z", True),
            ("2024-03-01T10:00:00+0100", True),
            ("2024-03-01T12:00:00+01", False),
            (1709290799, True),
            (1709290799.5, True),
            (1709290800, False),
            ("1709290799", False),
            (True, False),
            ("2024-02-30T00:00:00Z", False),
            ("2024-03-01T24:00:00Z", False),
            ("yesterday", False),
            (["2030-01-01", "2020-01-01"], True),
            *NOT_A_VALUE,
        ],
    ),
    (
        "after",
        "after",
        ["2024-03-01T11:00:00Z", 1893456000],  # after any: later than the earliest
        [
            ("2024-03-01T11:00:01Z", True),
            ("2024-03-01T11:00:00Z", False),
            ("2024-03-01T12:00:00", True),
            ("2024-03-01T12:00:00+01:00", False),
            ("2024-03-01T12:00:01+01:00", True),
            ("2024-03-01T06:00:01-05:00", True),
            (1709290801, True),
            ("2024-03-01t11:00:01z", True),
            ("2024-03-01T11:00:00,5Z", True),
            ("2024-03-01T11:00Z", False),
            *NOT_A_VALUE,
        ],
    ),
]

# exists: (value, matches, matches when negated); negation is exact here, missing included.
EXISTS_ROWS = [
    ("x", True),
    ("", True),
    (0, True),
    (False, True),
    ([], True),
    ([None], True),
    (MISSING, False),
    (None, False),
    ({"k": 1}, False),
]

SEGMENTS = [
    {
        "key": "beta-testers",
        "included": ["alice", "mallory"],
        "excluded": ["mallory", "eve"],
        "clauses": [{"attribute": "plan", "op": "in", "values": ["beta"]}],
    },
    {"key": "staff", "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}]},
    {"key": "vip", "included": ["victor"]},
    {
        "key": "us-staff",
        "clauses": [
            {"op": "in_segment", "values": ["staff"]},
            {"attribute": "country", "op": "in", "values": ["us"]},
        ],
    },
]


def clause(attribute: str, op: str, values: list[Any], negate: bool = False) -> dict[str, Any]:
    c: dict[str, Any] = {"attribute": attribute, "op": op, "values": values}
    if negate:
        c["negate"] = True
    return c


def rule(rid: str, clauses: list[dict[str, Any]], **serve: Any) -> dict[str, Any]:
    return {"id": rid, "clauses": clauses, "serve": serve}


def flag(
    key: str, rules: list[dict[str, Any]], targets: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    f: dict[str, Any] = {"key": key, "salt": SALT, "variants": VARIANTS, "rules": rules}
    if targets:
        f["targets"] = targets
    return f


def case(
    flag_key: str,
    unit_id: str,
    attributes: dict[str, Any],
    rule_id: str | None,
    serve: str | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"flag": flag_key, "unit_id": unit_id, "attributes": attributes, "rule": rule_id}
    out["serve"] = serve if rule_id is not None else None
    out["variant"] = variant
    return out


def attrs(value: Any) -> dict[str, Any]:
    return {} if value is MISSING else {"x": value}


def is_missing(value: Any) -> bool:
    return value is MISSING or value is None or isinstance(value, dict)


def operator_vectors(flags: list[dict[str, Any]], cases: list[dict[str, Any]]) -> None:
    for name, op, values, rows in OPERATOR_TABLES:
        for negate in (False, True):
            key = f"op-{name}" + ("-not" if negate else "")
            flags.append(flag(key, [rule("hit", [clause("x", op, values, negate)], variant="green")]))
            for i, (value, matches) in enumerate(rows):
                expected = (not matches and not is_missing(value)) if negate else matches
                hit = "hit" if expected else None
                cases.append(case(key, f"u{i}", attrs(value), hit, "variant", "green" if expected else None))
    for negate in (False, True):
        key = "op-exists" + ("-not" if negate else "")
        flags.append(
            flag(key, [rule("hit", [{"attribute": "x", "op": "exists", "negate": negate}], variant="green")])
        )
        for i, (value, present) in enumerate(EXISTS_ROWS):
            expected = present != negate
            cases.append(
                case(
                    key,
                    f"u{i}",
                    attrs(value),
                    "hit" if expected else None,
                    "variant",
                    "green" if expected else None,
                )
            )


def semantics_vectors(flags: list[dict[str, Any]], cases: list[dict[str, Any]]) -> None:
    # First match wins, in rule order.
    flags.append(
        flag(
            "order",
            [
                rule("first", [clause("country", "in", ["us"])], variant="green"),
                rule("second", [clause("country", "in", ["us", "ca"])], variant="blue"),
            ],
        )
    )
    cases += [
        case("order", "u1", {"country": "us"}, "first", "variant", "green"),
        case("order", "u1", {"country": "ca"}, "second", "variant", "blue"),
        case("order", "u1", {"country": "fr"}, None),
        case("order", "u1", {}, None),
    ]
    # Clauses are ANDed.
    flags.append(
        flag(
            "and",
            [rule("both", [clause("country", "in", ["us"]), clause("plan", "in", ["pro"])], variant="green")],
        )
    )
    cases += [
        case("and", "u1", {"country": "us", "plan": "pro"}, "both", "variant", "green"),
        case("and", "u1", {"country": "us", "plan": "free"}, None),
        case("and", "u1", {"plan": "pro"}, None),
        case(
            "and",
            "u1",
            {"country": "us", "plan": "pro", "other": {"ignored": True}},
            "both",
            "variant",
            "green",
        ),
    ]
    # Individual targets come first; a unit in two targets gets the first.
    targets = [
        {"variant": "green", "units": ["alice", "bob"]},
        {"variant": "blue", "units": ["bob", "carol"]},
    ]
    flags.append(flag("targets", [rule("us", [clause("country", "in", ["us"])], variant="control")], targets))
    cases += [
        case("targets", "alice", {"country": "us"}, "target", "target", "green"),
        case("targets", "bob", {}, "target", "target", "green"),
        case("targets", "carol", {"country": "us"}, "target", "target", "blue"),
        case("targets", "dave", {"country": "us"}, "us", "variant", "control"),
        case("targets", "dave", {"country": "fr"}, None),
        case("targets", "Alice", {}, None),
    ]
    # Segments: excluded beats included beats clauses; a segment without clauses is its included list.
    flags.append(
        flag(
            "segments",
            [
                rule("beta", [{"op": "in_segment", "values": ["beta-testers"]}], variant="green"),
                rule("staff-or-vip", [{"op": "in_segment", "values": ["us-staff", "vip"]}], variant="blue"),
                rule(
                    "free-not-beta",
                    [
                        {"op": "in_segment", "values": ["beta-testers"], "negate": True},
                        clause("plan", "in", ["free"]),
                    ],
                    variant="control",
                ),
            ],
        )
    )
    cases += [
        case("segments", "alice", {}, "beta", "variant", "green"),
        case("segments", "mallory", {"plan": "beta"}, None),
        case("segments", "mallory", {"plan": "free"}, "free-not-beta", "variant", "control"),
        case("segments", "eve", {"plan": "beta"}, None),
        case("segments", "eve", {"plan": "free"}, "free-not-beta", "variant", "control"),
        case("segments", "carol", {"plan": "beta"}, "beta", "variant", "green"),
        case("segments", "victor", {}, "staff-or-vip", "variant", "blue"),
        case("segments", "zed", {"email": "z@corp.test", "country": "us"}, "staff-or-vip", "variant", "blue"),
        case("segments", "zed", {"email": "z@corp.test", "country": "ca"}, None),
        case(
            "segments",
            "zed",
            {"email": "z@corp.test", "country": "ca", "plan": "free"},
            "free-not-beta",
            "variant",
            "control",
        ),
    ]
    # A segment bandit: the rule's own table comes from the server, so only the rule is fixed here.
    flags.append(
        flag("bandit", [rule("mobile", [clause("platform", "in", ["ios", "android"])], bandit=True)])
    )
    cases += [
        case("bandit", "u1", {"platform": "ios"}, "mobile", "bandit"),
        case("bandit", "u1", {"platform": "web"}, None),
    ]


def split_table(weights: list[float]) -> list[int]:
    """Bucket counts by largest remainder (DESIGN.md §4), in exact rational arithmetic."""
    total = sum(Fraction(w) for w in weights)
    quotas = [Fraction(w) / total * 10_000 for w in weights]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: 10_000 - sum(counts)]:
        counts[i] += 1
    return counts


def split_vectors(flags: list[dict[str, Any]], cases: list[dict[str, Any]]) -> None:
    splits = {"us": [1, 1, 0], "ca": [0.2, 0.3, 0.5], "mx": [1, 1, 1]}
    flags.append(
        flag("split", [rule(c, [clause("country", "in", [c])], weights=w) for c, w in splits.items()])
    )
    for country, weights in splits.items():
        counts = split_table(weights)
        for i in range(25):
            unit = f"user-{i * 7919}"
            bucket = (mmh3.hash(f"{SALT}.{unit}", 0, signed=False) * 10_000) >> 32
            arm = next(a for a in range(len(counts)) if bucket < sum(counts[: a + 1]))
            c = case("split", unit, {"country": country}, country, "weights", VARIANTS[arm])
            c["bucket"] = bucket
            cases.append(c)


def invalid_vectors() -> list[dict[str, Any]]:
    def bad(
        name: str,
        path: str,
        rules: list[dict[str, Any]],
        targets: list[dict[str, Any]] | None = None,
        segments: list[dict[str, Any]] | None = None,
        segment_problems: list[str] | None = None,
    ) -> dict[str, Any]:
        f: dict[str, Any] = {"key": "bad", "variants": VARIANTS, "rules": rules}
        if targets:
            f["targets"] = targets
        out: dict[str, Any] = {"name": name, "flag": f, "segments": segments or [], "path": path}
        out["segment_problems"] = segment_problems or []
        return out

    def one(c: dict[str, Any]) -> list[dict[str, Any]]:
        return [rule("r", [c], variant="green")]

    cycle = [
        {"key": "a", "clauses": [{"op": "in_segment", "values": ["b"]}]},
        {"key": "b", "clauses": [{"op": "in_segment", "values": ["a"]}]},
    ]
    return [
        bad("unknown operator", "rules[0].clauses[0].op", one(clause("x", "equals", ["a"]))),
        bad(
            "regex that does not compile", "rules[0].clauses[0].values[0]", one(clause("x", "matches", ["("]))
        ),
        bad(
            "regex over 256 characters",
            "rules[0].clauses[0].values[1]",
            one(clause("x", "matches", ["a", "b" * 257])),
        ),
        bad("nested quantifiers", "rules[0].clauses[0].values[0]", one(clause("x", "matches", ["^(a+)+$"]))),
        bad(
            "unknown segment",
            "rules[0].clauses[0].values[1]",
            one({"op": "in_segment", "values": ["vip", "nope"]}),
            segments=[SEGMENTS[2]],
        ),
        bad(
            "invalid segment",
            "rules[0].clauses[0].values[0]",
            one({"op": "in_segment", "values": ["broken"]}),
            segments=[{"key": "broken", "clauses": [clause("x", "like", ["a"])]}],
            segment_problems=["segments[0].clauses[0].op"],
        ),
        bad(
            "segment cycle",
            "rules[0].clauses[0].values[0]",
            one({"op": "in_segment", "values": ["a"]}),
            segments=cycle,
            segment_problems=["segments[0].clauses[0].values[0]", "segments[1].clauses[0].values[0]"],
        ),
        bad("null in values", "rules[0].clauses[0].values[1]", one(clause("x", "in", ["a", None]))),
        bad("numeric string for lt", "rules[0].clauses[0].values[0]", one(clause("x", "lt", ["10"]))),
        bad("boolean for gte", "rules[0].clauses[0].values[0]", one(clause("x", "gte", [True]))),
        bad("not a version", "rules[0].clauses[0].values[0]", one(clause("x", "semver_lt", ["1.0.0.0"]))),
        bad("not a date", "rules[0].clauses[0].values[0]", one(clause("x", "before", ["2024-13-01"]))),
        bad("values for exists", "rules[0].clauses[0].values", one(clause("x", "exists", ["y"]))),
        bad("empty values", "rules[0].clauses[0].values", one(clause("x", "in", []))),
        bad("no clauses", "rules[0].clauses", [rule("r", [], variant="green")]),
        bad("no attribute", "rules[0].clauses[0].attribute", one({"op": "in", "values": ["a"]})),
        bad(
            "negate not a boolean",
            "rules[0].clauses[0].negate",
            one({"attribute": "x", "op": "in", "values": ["a"], "negate": "yes"}),
        ),
        bad(
            "duplicate rule id",
            "rules[1].id",
            [
                rule("r", [clause("x", "in", ["a"])], variant="green"),
                rule("r", [clause("x", "in", ["b"])], variant="blue"),
            ],
        ),
        bad("reserved rule id", "rules[0].id", [rule("target", [clause("x", "in", ["a"])], variant="green")]),
        bad(
            "unknown variant",
            "rules[0].serve.variant",
            [rule("r", [clause("x", "in", ["a"])], variant="purple")],
        ),
        bad(
            "weights of the wrong length",
            "rules[0].serve.weights",
            [rule("r", [clause("x", "in", ["a"])], weights=[1, 1])],
        ),
        bad(
            "weights summing to zero",
            "rules[0].serve.weights",
            [rule("r", [clause("x", "in", ["a"])], weights=[0, 0, 0])],
        ),
        bad(
            "negative weight",
            "rules[0].serve.weights[2]",
            [rule("r", [clause("x", "in", ["a"])], weights=[1, 1, -1])],
        ),
        bad(
            "two kinds of serve",
            "rules[0].serve",
            [rule("r", [clause("x", "in", ["a"])], variant="green", bandit=True)],
        ),
        bad(
            "unknown target variant",
            "targets[0].variant",
            [],
            targets=[{"variant": "purple", "units": ["u1"]}],
        ),
        bad("empty unit id", "targets[0].units[0]", [], targets=[{"variant": "green", "units": [""]}]),
    ]


def main() -> None:
    flags: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    operator_vectors(flags, cases)
    semantics_vectors(flags, cases)
    split_vectors(flags, cases)
    doc = {
        "description": "DESIGN.md §9 targeting: targets first, then rules in order (clauses ANDed, values "
        "ORed, negate inverts, a list attribute matches if any element does, a missing attribute matches "
        "nothing), else the default allocation (rule null). Semantics: docs/targeting.md. Fixed splits "
        "bucket as §4 with the flag's salt. Generated by make_rules_vectors.py.",
        "variants": VARIANTS,
        "segments": SEGMENTS,
        "flags": flags,
        "cases": cases,
        "invalid": invalid_vectors(),
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(flags)} flags, {len(cases)} cases, {len(doc['invalid'])} invalid flags to {OUT}")


if __name__ == "__main__":
    main()
