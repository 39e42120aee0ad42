"""The wire protocol's bodies as typed schemas (docs/protocol.md "Flags", "Events", "Errors", "Limits").

Request bodies are decoded straight from the request bytes by one :class:`msgspec.json.Decoder` per type
(:mod:`banditflags_server.api.validation` adds the checks a schema cannot express and builds the
records); the same Structs give the JSON Schema of each body (``msgspec.json.schema_components``), the
source of the OpenAPI document.

Conventions the error messages rely on (:mod:`banditflags_server.api.schema_errors`):
``Meta(extra={"message": ...})`` replaces the message a field's constraints would give, and
``Meta(extra={"shorthand": name})`` on a union of a string and an object says that the plain string is
the object's field ``name`` (a variant given as ``"blue"`` is the variant ``{"key": "blue"}``).
Flag and patch bodies refuse unknown fields; event batches ignore them (newer SDKs may send more).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from banditflags_server.storage.audit import MAX_REASON

__all__ = [
    "FLAG_KEY",
    "MAX_COUNT",
    "MAX_CREDIT_WINDOW",
    "MAX_DESCRIPTION",
    "MAX_GUARDRAILS",
    "MAX_IDS",
    "MAX_INTERVAL",
    "MAX_ROWS",
    "MAX_VALUE_BYTES",
    "MAX_VARIANTS",
    "REQUEST_BODIES",
    "DeleteBody",
    "ErrorBody",
    "EventsAccepted",
    "EventsBody",
    "ExposureRow",
    "Guardrail",
    "NewFlagBody",
    "Objective",
    "PatchBody",
    "RewardRow",
    "Rule",
    "RuleClause",
    "SegmentBody",
    "SegmentPatchBody",
    "Serve",
    "Target",
    "Variant",
]

MAX_GUARDRAILS = 10
MAX_VARIANTS = 100
MAX_VALUE_BYTES = 32 * 1024
MAX_DESCRIPTION = 1000
MAX_ROWS = 10_000
MAX_IDS = 10_000  # decision ids per batch, over all rows: de-duplicating each costs the ingest a lookup
MAX_COUNT = 10**12  # per row; keeps sums far inside a 64-bit integer
MAX_INTERVAL = 86_400
MAX_CREDIT_WINDOW = 2_592_000
MAX_RULES = 100
MAX_CLAUSES = 50
MAX_TARGET_UNITS = 1_000  # per target; 10,000 per flag (api.targeting)
MAX_SEGMENT_UNITS = 10_000  # included, and excluded, per segment


def _matching(regex: str, description: str) -> Meta:
    # Python's `$` (msgspec checks patterns with `re.search`) also matches before a final newline;
    # `(?!\n)` rules that out and means the same in ECMA-262, the JSON Schema dialect.
    return Meta(
        pattern=f"^{regex}(?!\\n)$", description=description, extra={"message": f"must match ^{regex}$"}
    )


_NAME = _NAME_PATTERN = "[a-z0-9][a-z0-9_.-]{0,63}"
#: A whole string that is a flag key (for path parameters: the schema checks bodies).
FLAG_KEY = re.compile(_NAME)
FlagKey = Annotated[str, _matching(_NAME, "a flag key, unique on the server")]
VariantKey = Annotated[str, _matching("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "a variant key, unique in the flag")]
MetricName = Annotated[str, _matching(_NAME, "a guardrail metric")]
BatchId = Annotated[str, _matching("[A-Za-z0-9_-]{8,64}", "unique per batch, reused on retry")]
DecisionId = Annotated[str, _matching("[0-9a-f]{16}", "a decision id: 16 lower-case hex digits")]
Reward = Literal["binary", "continuous"]  # engine.params.REWARDS (a test pins them together)
Direction = Literal["maximize", "minimize"]  # engine.params.DIRECTIONS
State = Literal["running", "frozen", "killed"]
Baseline = Literal["control", "leader"]


def _text(max_length: int | None, description: str | None = None, *, min_length: int | None = None) -> Meta:
    # Free text is stored as text: PostgreSQL refuses a NUL character in it, so the schema does first.
    what = "a non-empty string" if min_length else "a string"
    limit = f" of at most {max_length} characters" if max_length else ""
    return Meta(
        min_length=min_length,
        max_length=max_length,
        pattern="^[^\\x00]*$",
        description=description,
        extra={"message": f"must be {what}{limit} without NUL characters"},
    )


Description = Annotated[str, _text(MAX_DESCRIPTION)]
Reason = Annotated[str, _text(MAX_REASON, "why, for the audit log")]
Share = Annotated[float, Meta(ge=0.0, le=1.0, description="the share of traffic the bandit may allocate")]


def _seconds(high: int, description: str) -> Meta:
    return Meta(description=description, extra={"message": f"must be a number of seconds in 1..{high}"})


Interval = Annotated[float, Meta(ge=1, le=MAX_INTERVAL), _seconds(MAX_INTERVAL, "seconds between recomputes")]
# A number kept as given (an integer stays an integer in what the server stores and serves).
CreditWindow = Annotated[
    Annotated[int, Meta(ge=1, le=MAX_CREDIT_WINDOW)] | Annotated[float, Meta(ge=1, le=MAX_CREDIT_WINDOW)],
    _seconds(MAX_CREDIT_WINDOW, "seconds after a decision during which a reward is credited to its arm"),
]
Tolerance = Annotated[int, Meta(ge=0)] | Annotated[float, Meta(ge=0)]
Policy = Annotated[
    dict[str, Any],
    Meta(description="policy parameters (docs/protocol.md); the engine validates them for the flag"),
]
Count = Annotated[int, Meta(ge=1, le=MAX_COUNT)]


# -- targeting (DESIGN.md §9, docs/targeting.md; values per operator: api.targeting) --------------------

#: Clause operators, as the SDK compiles them (``banditflags._operators.OPERATORS``).
Operator = Literal[
    "in", "starts_with", "ends_with", "contains", "matches", "lt", "lte", "gt", "gte", "semver_eq",
    "semver_lt", "semver_lte", "semver_gt", "semver_gte", "before", "after", "exists", "in_segment",
]  # fmt: skip
RuleId = Annotated[str, _matching("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "a rule id, unique in the flag")]
UnitId = Annotated[
    str, Meta(min_length=1, max_length=256, extra={"message": "must be a unit id of 1..256 characters"})
]
Attribute = Annotated[
    str, Meta(min_length=1, max_length=256, extra={"message": "must be a string of 1 to 256 characters"})
]


class RuleClause(Struct, forbid_unknown_fields=True, kw_only=True):
    """One condition: ``attribute`` ``op`` any of ``values`` (``in_segment``: values are segment keys)."""

    op: Operator
    attribute: Attribute | UnsetType = UNSET  # required except for in_segment
    values: Annotated[list[Any], Meta(max_length=10_000)] = []
    negate: bool = False


Clauses = Annotated[list[RuleClause], Meta(max_length=MAX_CLAUSES)]


class Serve(Struct, forbid_unknown_fields=True, kw_only=True):
    """What a matching rule serves: exactly one of a variant, a fixed split, or its own bandit."""

    variant: VariantKey | UnsetType = UNSET
    weights: list[float] | UnsetType = UNSET
    bandit: bool | UnsetType = UNSET


class Rule(Struct, forbid_unknown_fields=True, kw_only=True):
    """A targeting rule: its clauses are ANDed; the first matching rule serves."""

    id: RuleId
    clauses: Clauses
    serve: Serve


class Target(Struct, forbid_unknown_fields=True, kw_only=True):
    """Individual units pinned to a variant."""

    variant: VariantKey
    units: Annotated[list[UnitId], Meta(max_length=MAX_TARGET_UNITS)]


Rules = Annotated[list[Rule], Meta(max_length=MAX_RULES, description="in order; the first match wins")]
Targets = Annotated[list[Target], Meta(max_length=MAX_VARIANTS, description="evaluated before the rules")]
SegmentUnits = Annotated[list[UnitId], Meta(max_length=MAX_SEGMENT_UNITS)]


class SegmentBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/segments: a reusable set of clauses plus included and excluded unit ids."""

    key: Annotated[str, _matching(_NAME_PATTERN, "a segment key, unique on the server")]
    clauses: Clauses = []
    included: SegmentUnits = []
    excluded: SegmentUnits = []
    description: Description = ""
    reason: Reason = ""


class SegmentPatchBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH /v1/segments/{key}: only the fields given change (each list replaced whole)."""

    clauses: Clauses | UnsetType = UNSET
    included: SegmentUnits | UnsetType = UNSET
    excluded: SegmentUnits | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    reason: Reason = ""


# -- flags --------------------------------------------------------------------------------------------


class Variant(Struct, forbid_unknown_fields=True):
    """An arm of a flag: its key and the JSON value the SDK hands out (default: the key)."""

    key: VariantKey
    value: Any = UNSET


VariantItem = Annotated[
    VariantKey | Variant,
    Meta(
        description='a plain string s means {"key": s, "value": s}',
        extra={"message": "must be a string or an object {key, value}", "shorthand": "key"},
    ),
]


class Objective(Struct, forbid_unknown_fields=True, kw_only=True):
    """What the bandit optimises."""

    reward: Reward = "binary"
    direction: Direction = "maximize"
    unit: Literal["decision", "user"] = "decision"
    credit_window: CreditWindow = 86400


class Guardrail(Struct, forbid_unknown_fields=True, kw_only=True):
    """A metric that disables an arm when it is worse than the control's beyond the tolerance."""

    metric: MetricName
    direction: Direction = "minimize"
    reward: Reward = "binary"
    tolerance: Tolerance = 0.1
    relative: bool = True
    confidence: Annotated[float, Meta(ge=0.5, lt=1.0)] = 0.99


Guardrails = Annotated[list[Guardrail], Meta(max_length=MAX_GUARDRAILS)]
Variants = Annotated[
    list[VariantItem],
    Meta(
        min_length=1,
        max_length=MAX_VARIANTS,
        extra={"message": f"must be a list of 1..{MAX_VARIANTS} variants"},
    ),
]
Control = Annotated[
    VariantKey,
    Meta(
        description="default: the first variant", extra={"message": "must be the key of one of the variants"}
    ),
]
Disabled = Annotated[list[str], Meta(description="the disabled variant keys (not the control)")]


class NewFlagBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /v1/flags: a new flag."""

    key: FlagKey
    description: Description = ""
    variants: Variants
    control: Control | UnsetType = UNSET
    objective: Objective | None = None
    policy: Policy | UnsetType = UNSET  # default: thompson; fixed for a flag with one variant
    state: State = "running"
    exploration: Share = 1.0
    baseline: Baseline = "control"
    recompute_interval: Interval | UnsetType = UNSET  # default: the server's setting
    guardrails: Guardrails = []
    targets: Targets = []
    rules: Rules = []
    reason: Reason = ""


class PatchBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH /v1/flags/{key}: only the fields given change; the policy is merged into the current one."""

    state: State | UnsetType = UNSET
    exploration: Share | UnsetType = UNSET
    policy: Policy | UnsetType = UNSET
    baseline: Baseline | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    recompute_interval: Interval | UnsetType = UNSET
    guardrails: Guardrails | UnsetType = UNSET
    disabled: Disabled | UnsetType = UNSET
    targets: Targets | UnsetType = UNSET  # the whole list is replaced
    rules: Rules | UnsetType = UNSET  # the whole list is replaced
    reason: Reason = ""


class DeleteBody(Struct, forbid_unknown_fields=True):
    """The optional body of DELETE /v1/flags/{key}."""

    reason: Reason = ""


# -- events -------------------------------------------------------------------------------------------


class ExposureRow(Struct, gc=False, kw_only=True):
    """Units that got an arm of a flag version (unknown fields are ignored); ``rule``: the rule that
    served them (a rule id, or "target"; absent or null: the flag's default allocation), ``version``
    then being a bandit rule's own allocation version, the flag's otherwise."""

    flag: Annotated[str, _text(None, min_length=1)]
    version: Count
    arm: Annotated[int, Meta(ge=0, le=MAX_COUNT)]
    count: Count
    rule: RuleId | None = None


class RewardRow(ExposureRow, gc=False, kw_only=True):
    """The rewards of count decisions: their sum and sum of squares (JSON numbers are finite); for a
    binary objective, the decision ids of the conversions in ``sum`` (each counted once, docs/protocol.md)."""

    sum: float
    sum_sq: Annotated[float, Meta(ge=0.0)]
    metric: MetricName | None = None
    ids: (
        Annotated[
            list[DecisionId],
            Meta(description="decision ids of the conversions counted in sum (at most sum of them)"),
        ]
        | None
    ) = None


SentAt = Annotated[
    str | float | None,
    Meta(description="informational", extra={"message": "must be an RFC 3339 string or epoch seconds"}),
]
Dropped = Annotated[int, Meta(ge=0, description="events the SDK dropped since the last batch")]
ConfigRevision = Annotated[int, Meta(ge=0, description="the config revision the SDK serves")]
ConfigAge = Annotated[float, Meta(ge=0.0, description="seconds since the SDK's config was confirmed")]


class EventsBody(Struct, kw_only=True):
    """POST /v1/events: an SDK's pre-aggregated counts (unknown fields are ignored)."""

    batch_id: BatchId
    sent_at: SentAt = None
    sdk: Annotated[str, _text(200, "the SDK's name and version")] = ""
    exposures: list[ExposureRow] | None = None
    rewards: list[RewardRow] | None = None
    dropped: Dropped = 0
    config_revision: ConfigRevision | None = None
    config_age: ConfigAge | None = None


class Ignored(Struct):
    """A row counted nowhere, and why (an unknown flag, version or metric; a binary metric out of range)."""

    field: str
    reason: str


class EventsAccepted(Struct):
    """The 202 answer of POST /v1/events; ``duplicates``: conversions not counted because their decision
    id was credited already (not a duplicate batch: that is ``duplicate``)."""

    batch_id: str
    duplicate: bool
    exposures: int
    rewards: int
    ignored: list[Ignored]
    duplicates: int = 0


# -- errors -------------------------------------------------------------------------------------------


class FieldError(Struct):
    """One problem: the field as a dotted path with [i] for list items (null: the whole body)."""

    field: str | None
    message: str


class ErrorDetail(Struct):
    """What went wrong; field is the first of errors (at most 50 listed)."""

    code: str
    message: str
    field: str | None
    errors: list[FieldError]


class ErrorBody(Struct):
    """The body of every 4xx and 5xx."""

    error: ErrorDetail


#: The request body of each route that takes one.
REQUEST_BODIES: dict[str, type[Struct]] = {
    "POST /v1/flags": NewFlagBody,
    "PATCH /v1/flags/{key}": PatchBody,
    "DELETE /v1/flags/{key}": DeleteBody,
    "POST /v1/events": EventsBody,
    "POST /v1/segments": SegmentBody,
    "PATCH /v1/segments/{key}": SegmentPatchBody,
    "DELETE /v1/segments/{key}": DeleteBody,
}
