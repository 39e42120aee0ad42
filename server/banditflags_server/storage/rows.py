"""Rows <-> records: how a :class:`~banditflags_server.records.Flag` and an
:class:`~banditflags_server.records.Allocation` are stored (lists and objects as compact JSON in text
columns), shared by the store's modules.

>>> to_json({"a": [1, 2.5]})
'{"a":[1,2.5]}'
>>> encode_changes({"state": "killed", "policy": {"name": "ucb1"}})
{'state': 'killed', 'policy': '{"name":"ucb1"}'}
"""

from __future__ import annotations

import json
from typing import Any

from banditflags_server.records import Allocation, Flag
from banditflags_server.storage.schema import allocations, flags

#: Every column of ``flags``, in table order.
FLAG_COLS = [flags.c[name] for name in flags.c.keys()]  # noqa: SIM118
#: The columns of ``allocations`` that make an :class:`Allocation` (with the version from elsewhere).
ALLOC_COLS = [
    allocations.c.created_at,
    allocations.c.weights,
    allocations.c.bandit_weights,
    allocations.c.table_rle,
    allocations.c.reason,
    allocations.c.moved,
]
#: Columns of ``flags`` that hold JSON.
JSON_COLS = (
    "variants",
    "objective",
    "policy",
    "bandit_weights",
    "guardrails",
    "arm_state",
    "targets",
    "rules",
)


def to_json(obj: Any) -> str:
    """Compact JSON; NaN and infinities are refused."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def encode_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Changed columns of a flag (column -> Python value) as column values: JSON columns encoded."""
    out = {name: to_json(value) if name in JSON_COLS else value for name, value in changes.items()}
    if "rule_allocations" in changes:
        out["rule_allocations"] = rule_allocs_json(changes["rule_allocations"])
    return out


def rule_allocs_json(allocs: dict[str, Allocation]) -> str:
    """The ``flags.rule_allocations`` column: each rule's current allocation."""
    return to_json({rule: {"version": a.version, **alloc_dict(a)} for rule, a in allocs.items()})


def alloc_dict(a: Allocation) -> dict[str, Any]:
    """An allocation's columns but the version, as Python values."""
    return {
        "created_at": a.created_at,
        "weights": a.weights,
        "bandit_weights": a.bandit_weights,
        "table_rle": a.table_rle,
        "reason": a.reason,
        "moved": a.moved,
    }


def _rule_allocs(raw: str | None) -> dict[str, Allocation]:
    return {rule: Allocation(**a) for rule, a in json.loads(raw or "{}").items()}


def flag_from_row(m: Any) -> Flag:
    """A flag (without its allocation) from a row mapping of :data:`FLAG_COLS`."""
    return Flag(
        key=m["key"],
        description=m["description"],
        salt=m["salt"],
        variants=json.loads(m["variants"]),
        control=int(m["control"]),
        objective=json.loads(m["objective"]),
        policy=json.loads(m["policy"]),
        state=m["state"],
        exploration=float(m["exploration"]),
        baseline=m["baseline"],
        recompute_interval=float(m["recompute_interval"]),
        bandit_weights=json.loads(m["bandit_weights"]),
        version=int(m["version"]),
        row_version=int(m["row_version"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
        recomputed_at=None if m["recomputed_at"] is None else float(m["recomputed_at"]),
        guardrails=json.loads(m["guardrails"] or "[]"),
        arm_state=json.loads(m["arm_state"] or "{}"),
        targets=json.loads(m["targets"] or "[]"),
        rules=json.loads(m["rules"] or "[]"),
        rule_allocations=_rule_allocs(m["rule_allocations"]),
    )


def alloc_from_row(version: int, m: Any) -> Allocation:
    """Allocation ``version`` from a row mapping of :data:`ALLOC_COLS`."""
    return Allocation(
        version=version,
        created_at=float(m["created_at"]),
        weights=json.loads(m["weights"]),
        bandit_weights=json.loads(m["bandit_weights"]),
        table_rle=json.loads(m["table_rle"]),
        reason=m["reason"],
        moved=int(m["moved"]),
    )


def flag_values(f: Flag) -> dict[str, Any]:
    """The ``flags`` row of a flag (its allocation is a row of its own)."""
    return {
        "key": f.key,
        "description": f.description,
        "salt": f.salt,
        "variants": to_json(f.variants),
        "control": f.control,
        "objective": to_json(f.objective),
        "policy": to_json(f.policy),
        "state": f.state,
        "exploration": f.exploration,
        "baseline": f.baseline,
        "recompute_interval": f.recompute_interval,
        "bandit_weights": to_json(f.bandit_weights),
        "version": f.version,
        "row_version": f.row_version,
        "created_at": f.created_at,
        "updated_at": f.updated_at,
        "recomputed_at": f.recomputed_at,
        "guardrails": to_json(f.guardrails),
        "arm_state": to_json(f.arm_state),
        "targets": to_json(f.targets),
        "rules": to_json(f.rules),
        "rule_allocations": rule_allocs_json(f.rule_allocations),
    }


def alloc_values(key: str, a: Allocation) -> dict[str, Any]:
    """The ``allocations`` row of flag ``key``'s allocation ``a``."""
    return {
        "flag": key,
        "version": a.version,
        "created_at": a.created_at,
        "weights": to_json(a.weights),
        "bandit_weights": to_json(a.bandit_weights),
        "table_rle": to_json(a.table_rle),
        "reason": a.reason,
        "moved": a.moved,
    }


def rule_alloc_values(key: str, rule: str, a: Allocation) -> dict[str, Any]:
    """The ``rule_allocations`` history row of rule ``rule`` of flag ``key``."""
    return {**alloc_values(key, a), "rule": rule}
