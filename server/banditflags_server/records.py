"""The records every layer shares: flags, allocations, arm stats and validated inputs.

Plain dataclasses with no I/O and no web stack: the storage layer reads and writes them, the engine
plans from them, the API and the console build them from requests. Nothing here imports another
``banditflags_server`` module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Allocation",
    "EventBatch",
    "EventRow",
    "Flag",
    "FlagPatch",
    "IngestResult",
    "NewFlag",
    "Periods",
    "RecomputeWrite",
    "Stale",
    "entity_tag",
    "etag_matches",
    "require_etag",
]


def entity_tag(fields: Any) -> str:
    """A strong ETag (quoted, as HTTP wants it) of JSON-able ``fields``: flags' and segments'.

    >>> entity_tag({"a": 1}) == entity_tag({"a": 1}) != entity_tag({"a": 2})
    True
    """
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:20] + '"'


def etag_matches(if_match: str, etag: str) -> bool:
    """RFC 9110's ``If-Match`` against a strong ETag: ``*``, or a comma-separated list naming it.

    >>> etag_matches('"a", "b"', '"b"'), etag_matches("*", '"b"'), etag_matches('W/"b"', '"b"')
    (True, True, False)
    """
    if if_match.strip() == "*":
        return True
    return etag in (t.strip() for t in if_match.split(","))


def require_etag(if_match: str | None, etag: str) -> None:
    """Raise :class:`Stale` unless ``if_match`` (an ``If-Match`` header; None: no precondition) names
    ``etag``, the resource's current ETag."""
    if if_match is not None and not etag_matches(if_match, etag):
        raise Stale(etag)


class Stale(Exception):
    """The resource's ETag is not one the caller's ``If-Match`` names: someone changed it since the
    caller read it (``args[0]``: the current ETag). Raised inside the write's transaction, so the
    check and the write are one."""


@dataclass
class Allocation:
    """One allocation version of a flag."""

    version: int
    created_at: float
    weights: list[float]
    bandit_weights: list[float]
    table_rle: list[list[int]]
    reason: str
    moved: int


@dataclass
class Flag:
    """A flag row with its current allocation."""

    key: str
    description: str
    salt: str
    variants: list[dict[str, Any]]
    control: int
    objective: dict[str, Any]
    policy: dict[str, Any]
    state: str
    exploration: float
    baseline: str
    recompute_interval: float
    bandit_weights: list[float]
    version: int
    row_version: int
    created_at: float
    updated_at: float
    recomputed_at: float | None
    allocation: Allocation | None = None
    # Guardrail declarations and {"disabled": {arm_key: {reason, at, by}}, "exempt": [arm_key]} (issue 3).
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    arm_state: dict[str, Any] = field(default_factory=dict)
    # Targeting (issue 12), as validated: [{variant, units}], [{id, clauses, serve}]; and the current
    # allocation of each bandit rule (kept after the rule is removed, so re-adding it resumes).
    targets: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    rule_allocations: dict[str, Allocation] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        """The flag's entity tag (quoted, as HTTP wants it): a hash of what operators set (controls,
        variants, objective, policy, guardrails, disabled arms, targets, rules), not of what the bandit
        moves on its own (weights, versions, timestamps), so a recompute between an operator's read and
        write does not fail their ``If-Match``.

        >>> f = Flag("f", "", "s", [{"key": "a"}], 0, {}, {}, "running", 1.0, "control", 60.0, [1.0], 1, 1,
        ...          0.0, 0.0, None)
        >>> f.etag == Flag(**{**f.__dict__, "version": 9, "bandit_weights": [0.5]}).etag
        True
        >>> f.etag == Flag(**{**f.__dict__, "state": "killed"}).etag, f.etag[0] + f.etag[-1]
        (False, '""')
        """
        fields = (
            self.description, self.variants, self.control, self.objective, self.policy, self.state,
            self.exploration, self.baseline, self.recompute_interval, self.guardrails, self.arm_state,
            self.targets, self.rules,
        )  # fmt: skip
        return entity_tag(fields)

    @property
    def bandit_rules(self) -> list[str]:
        """The ids of the rules that serve their own bandit, in order."""
        return [r["id"] for r in self.rules if r.get("serve", {}).get("bandit") is True]

    @property
    def k(self) -> int:
        """Number of arms."""
        return len(self.variants)

    @property
    def disabled(self) -> dict[str, Any]:
        """Disabled arms: variant key -> why, when and by whom."""
        d = self.arm_state.get("disabled", {})
        return d if isinstance(d, dict) else {}

    @property
    def active(self) -> tuple[bool, ...]:
        """Per arm: not disabled (the control is never disabled)."""
        off = self.disabled
        return tuple(i == self.control or v["key"] not in off for i, v in enumerate(self.variants))


@dataclass
class Periods:
    """A flag's arm stats as ``(P, K)`` arrays over its versions, oldest first.

    ``clamped`` (same shape, or None: nothing was) holds the binary rewards left out of ``s`` because a
    cell had more of them than exposures: a rate above 1 cannot be true, so it never reaches the engine.
    """

    versions: list[int]
    created_at: list[float]
    n: np.ndarray
    r: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    clamped: np.ndarray | None = None

    def clamped_per_arm(self) -> np.ndarray:
        """The rewards left out per arm, over all versions (zeros when none were)."""
        if self.clamped is None or self.clamped.size == 0:
            return np.zeros(self.n.shape[1] if self.n.ndim == 2 else 0)
        return np.asarray(self.clamped.sum(axis=0), dtype=float)


@dataclass
class IngestResult:
    """What ``POST /v1/events`` answers.

    ``duplicates``: conversions not counted because their decision id was credited already, per flag in
    ``duplicate_flags`` and per row (its ``where``) in ``removed``.
    """

    batch_id: str
    duplicate: bool
    exposures: int = 0
    rewards: int = 0
    ignored: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0
    duplicate_flags: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)


@dataclass
class RecomputeWrite:
    """The outcome of one flag's recompute, written by :meth:`Store.apply_recomputes`."""

    key: str
    row_version: int
    bandit_weights: list[float]
    recomputed_at: float
    allocation: Allocation | None
    # Other flag columns to write (e.g. arm_state when a guardrail disables an arm, policy on promotion).
    changes: dict[str, Any] = field(default_factory=dict)
    # Bandit rules' new allocation versions (issue 12), for their history (the current ones are in
    # ``changes["rule_allocations"]``).
    rule_versions: dict[str, Allocation] = field(default_factory=dict)


@dataclass
class NewFlag:
    """A validated ``POST /v1/flags`` body."""

    key: str
    description: str
    variants: list[dict[str, Any]]
    control: int
    objective: dict[str, Any]
    policy: dict[str, Any]
    state: str
    exploration: float
    baseline: str
    recompute_interval: float
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FlagPatch:
    """A validated ``PATCH /v1/flags/{key}`` body: only the fields given."""

    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def touches_table(self) -> bool:
        """Whether the served weights must be recomputed at once."""
        return bool({"exploration", "policy", "baseline", "disabled"} & set(self.changes))


@dataclass
class EventRow:
    """One exposure or reward row of a batch; ``where`` is its field path (``rewards[2]``)."""

    where: str
    flag: str
    version: int
    arm: int
    count: int
    is_reward: bool = False
    sum: float = 0.0
    sum_sq: float = 0.0
    metric: str | None = None  # a guardrail metric; None: the flag's objective
    ids: list[str] | None = None  # decision ids of the conversions in ``sum`` (binary objectives)
    rule: str = ""  # the rule that served (a rule id, "target"); "": the flag's default allocation


@dataclass
class EventBatch:
    """A structurally valid ``POST /v1/events`` body (flags and arms are checked by the store)."""

    batch_id: str
    exposures: list[EventRow]
    rewards: list[EventRow]
    sdk: str = ""
    dropped: int = 0
