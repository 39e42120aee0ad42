"""The wire protocol's response bodies as typed schemas (docs/protocol.md), for the OpenAPI document.

The handlers build these bodies as plain JSON (``GET /v1/config`` serves bytes cached per revision, and
the flag bodies are assembled from the records in one pass), so these Structs *describe* the answers:
:mod:`banditflags_server.api.openapi` turns them into JSON Schema, and the suite checks that real
answers conform (tests/server/test_openapi.py decodes them with these types; schemathesis validates
every answer it gets against the document). ``forbid_unknown_fields`` makes a field the server starts
sending without saying so here a test failure, not a silent drift; clients still ignore unknown fields.

The answers of ``POST /v1/events`` and the error body are :class:`~banditflags_server.api.schemas.
EventsAccepted` and :class:`~banditflags_server.api.schemas.ErrorBody`, which the handlers do encode.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from banditflags_server.api.schemas import (
    Baseline,
    Direction,
    Guardrail,
    Reward,
    Rule,
    RuleClause,
    State,
    Target,
)

__all__ = [
    "Alive",
    "AuditEntry",
    "AuditLog",
    "Config",
    "ConfigFlag",
    "DisabledArm",
    "FlagList",
    "FlagOut",
    "FlagWarning",
    "History",
    "HistoryVersion",
    "ObjectiveOut",
    "PolicyOut",
    "Readiness",
    "RuleAllocation",
    "SegmentList",
    "SegmentOut",
    "Stats",
    "VariantOut",
    "VariantStats",
]

Time = Annotated[str, Meta(description="RFC 3339 UTC, to the second (2026-11-27T23:10:00Z)")]
Weights = Annotated[list[float], Meta(description="one weight per variant, in variant order, summing to 1")]
# An estimate the engine could not make (no data, a non-finite value) is null.
Estimate = float | None


class _Out(Struct, forbid_unknown_fields=True, kw_only=True):
    """A response body: every field the server sends is named."""


class VariantOut(_Out):
    """An arm: its key and the JSON value the SDK hands out."""

    key: str
    value: Any


class ObjectiveOut(_Out):
    """What the bandit optimises, defaults filled in."""

    reward: Reward
    direction: Direction
    unit: Literal["decision", "user"]
    credit_window: float


class PolicyOut(_Out):
    """Every policy parameter with its value (docs/bandit.md)."""

    name: Literal["thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "fixed"]
    floor: float
    burn_in: int
    max_step: float | None
    half_life: float | None
    window: float | None
    stratify: bool
    stability: float
    balance: float | None
    draws: int
    epsilon: float
    top_two_beta: float
    weights: list[float] | None
    winner_p: float
    winner_min_n: int
    auto_promote: bool
    pooling: Literal["auto", "off"]


class VariantStats(_Out):
    """A variant's totals over all versions and the engine's estimates."""

    variant: str
    n: Annotated[int, Meta(ge=0, description="exposures over all versions")]
    rewards: Annotated[int, Meta(ge=0)]
    sum: float
    mean: Estimate
    ci_low: Estimate
    ci_high: Estimate
    p_best: Estimate
    expected_loss: Estimate
    clamped: Annotated[
        float,
        Meta(
            ge=0.0,
            description="binary conversions above the exposures of their version, left out of sum and mean",
        ),
    ]
    sum_sq: float | UnsetType = UNSET  # in GET /v1/flags/{key}/stats only


class FlagWarning(_Out):
    """Something an operator should know about a flag's numbers (docs/protocol.md, Events)."""

    code: Literal["rewards_above_exposures"]
    variant: str
    clamped: Annotated[float, Meta(ge=0.0, description="the conversions left out")]
    message: str


class DisabledArm(_Out):
    """A disabled variant: by whom, when and why."""

    variant: str
    by: Literal["operator", "guardrail"]
    reason: str
    at: Time
    metric: str | UnsetType = UNSET
    probability: float | UnsetType = UNSET


Table = Annotated[
    list[tuple[int, int]],
    Meta(description="the bucket table, run-length encoded: [arm index, run], runs sum to 10000"),
]


class RuleAllocation(_Out):
    """A bandit rule's current allocation (its own versions and minimal-movement table)."""

    version: Annotated[int, Meta(ge=1)]
    weights: Weights
    table: Table


class FlagOut(_Out):
    """A flag as ``GET /v1/flags/{key}`` shows it (the answer of create, patch and recompute too)."""

    key: str
    etag: Annotated[
        str, Meta(description="the ETag: send it as If-Match with a PATCH or DELETE (412 if it changed)")
    ]
    description: str
    salt: str
    variants: list[VariantOut]
    control: str
    objective: ObjectiveOut
    policy: PolicyOut
    state: State
    exploration: float
    baseline: Baseline
    recompute_interval: float
    version: Annotated[int, Meta(ge=1, description="the current allocation version")]
    weights: Weights | None
    bandit_weights: Annotated[list[float], Meta(description="the policy's weights before the throttle")]
    created_at: Time
    updated_at: Time
    recomputed_at: Time | None
    guardrails: list[Guardrail]
    disabled: list[DisabledArm]
    targets: list[Target]
    rules: list[Rule]
    rule_allocations: Annotated[dict[str, RuleAllocation], Meta(description="per bandit rule, by id")]
    rules_report: list[RuleReport] | UnsetType = UNSET  # GET /v1/flags/{key} and the flag's writes
    stats: list[VariantStats] | UnsetType = UNSET  # GET /v1/flags lists them only with ?stats=true
    warnings: list[FlagWarning] | UnsetType = UNSET  # with the stats


class RuleReport(_Out):
    """One rule's numbers (issue 12): a bandit rule's current version and weights, every rule's stats."""

    id: Annotated[str, Meta(description='a rule id, "target" (individual targets), or a rule deleted since')]
    bandit: bool
    version: int | None
    weights: Weights | None
    stats: list[VariantStats]


class FlagList(_Out):
    """``GET /v1/flags``."""

    flags: list[FlagOut]


class HistoryVersion(_Out):
    """One allocation version."""

    version: int
    created_at: Time
    weights: Weights
    bandit_weights: list[float]
    reason: Annotated[str, Meta(description="why it was made: create, recompute, policy, arms, ...")]
    moved: Annotated[int, Meta(ge=0, description="table slots that changed arm (of 10,000)")]


class History(_Out):
    """``GET /v1/flags/{key}/history``: every allocation version, oldest first."""

    key: str
    versions: list[HistoryVersion]
    rules: Annotated[dict[str, list[HistoryVersion]], Meta(description="each bandit rule's own versions")]


class Period(_Out):
    """The raw counts of one allocation version, per variant."""

    version: int
    n: list[int]
    rewards: list[int]
    s: list[float]
    ss: list[float]
    clamped: Annotated[list[float], Meta(description="binary conversions above exposures, left out of s")]
    weights: Weights


class Srm(_Out):
    """The sample ratio mismatch test: do exposures follow the served weights?"""

    chi2: float | None
    df: int
    p_value: float | None
    mismatch: bool
    threshold: float


class Winner(_Out):
    """The winner signal: the variant with P(best) over the threshold, if any."""

    variant: str | None
    threshold: float
    min_n: int
    auto_promote: bool


class Stats(_Out):
    """``GET /v1/flags/{key}/stats``."""

    key: str
    version: int
    rules: list[RuleReport]
    variants: list[VariantStats]
    warnings: list[FlagWarning]
    periods: list[Period]
    srm: Srm
    winner: Winner


class AuditEntry(_Out):
    """One change of a flag: who (the key's name, never the key), when, before and after."""

    id: int
    flag: str
    at: Time
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str


class AuditLog(_Out):
    """``GET /v1/flags/{key}/audit`` and ``GET /v1/segments/{key}/audit``: newest first (an entry's
    ``flag`` names the flag, or the segment)."""

    key: str
    entries: list[AuditEntry]


class ConfigFlag(_Out):
    """One flag of the config, as the SDK needs it."""

    key: str
    salt: str
    state: State
    exploration: float
    version: int
    variants: list[VariantOut]
    control: str
    weights: Weights
    table: Table
    objective: ObjectiveOut
    policy: str
    targets: list[Target]
    rules: list[Rule]
    rule_allocations: Annotated[
        dict[str, RuleAllocation], Meta(description="one per rule whose serve is {bandit: true}, by id")
    ]


class ConfigSegment(_Out):
    """A segment as the SDK needs it (a flag's rules name it by key)."""

    key: str
    clauses: list[RuleClause]
    included: list[str]
    excluded: list[str]


class SegmentOut(ConfigSegment):
    """A segment as ``GET /v1/segments/{key}`` shows it."""

    etag: Annotated[
        str, Meta(description="the ETag: send it as If-Match with a PATCH or DELETE (412 if it changed)")
    ]
    description: str
    created_at: Time
    updated_at: Time


class SegmentList(_Out):
    """``GET /v1/segments``."""

    segments: list[SegmentOut]


class SegmentInUse(_Out):
    """409 of ``DELETE /v1/segments/{key}``: the flags whose rules name the segment."""

    error: Any
    flags: list[str]


class Config(_Out):
    """``GET /v1/config``: every flag that has an allocation."""

    schema: Literal[1]
    revision: Annotated[int, Meta(ge=0, description="increases on every change; the ETag")]
    generated_at: Time
    flags: list[ConfigFlag]
    segments: list[ConfigSegment]


class Alive(_Out):
    """``GET /healthz``."""

    status: Literal["ok"]


class Readiness(_Out):
    """``GET /readyz``: ``ready`` with the revision, or ``unavailable`` (503)."""

    status: Literal["ready", "unavailable"]
    revision: int | UnsetType = UNSET
