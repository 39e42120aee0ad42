"""Request bodies into the records the server works with (docs/protocol.md "Flags", "Events", "Limits").

The shapes are the typed schemas of :mod:`~banditflags_server.api.schemas`, decoded straight from the
request bytes (``*_from_json``, for the API's handlers) or converted from a dict (``validate_*`` and
:func:`patch_validator`, for the console's forms). This module adds what a schema cannot say (a control
that names a variant, unique keys and metrics, the policy parameters of this flag, the row cap) and builds
the records. Every problem names its field (``variants[1].key``, ``exposures[3].count``) in one
:class:`~banditflags_server.errors.ValidationError` (422), before anything is written; 400 for bad JSON,
413 for a batch of more than :data:`~banditflags_server.api.schemas.MAX_ROWS` rows.

A body msgspec refuses takes the dict path: it lists every bad field (msgspec stops at the first) and
runs the checks across fields on the fields that did decode, as the hand-written validators did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET

from banditflags_server.api.responses import dumps
from banditflags_server.api.schema_errors import MAX_PROBLEMS, explain
from banditflags_server.api.schemas import (
    MAX_IDS,
    MAX_ROWS,
    MAX_VALUE_BYTES,
    DeleteBody,
    EventsBody,
    Guardrail,
    NewFlagBody,
    Objective,
    PatchBody,
    RewardRow,
    Variant,
    VariantItem,
)
from banditflags_server.api.targeting import rules_json, targets_json
from banditflags_server.engine import ParamError, PolicyParams
from banditflags_server.errors import ApiError, ValidationError
from banditflags_server.records import EventBatch, EventRow, Flag, FlagPatch, NewFlag

__all__ = [
    "Problems",
    "SdkReport",
    "decode_body",
    "events_from_json",
    "new_flag_from_json",
    "parse_json",
    "patch_from_json",
    "patch_validator",
    "reason_from_json",
    "validate_events",
    "validate_new_flag",
    "validate_patch",
]

S = TypeVar("S", bound=msgspec.Struct)
#: What an events batch says of the SDK's config: its revision and age (for the staleness metrics).
SdkReport = tuple[int | None, float | None]

_NEW_FLAG = msgspec.json.Decoder(NewFlagBody)
_PATCH = msgspec.json.Decoder(PatchBody)
_DELETE = msgspec.json.Decoder(DeleteBody)
_EVENTS = msgspec.json.Decoder(EventsBody)


class Problems:
    """Collects ``(field, message)`` pairs; :meth:`check` raises them as one 422."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str]] = []

    def add(self, field: str | None, message: str) -> None:
        """Record one problem."""
        self.items.append((field, message))

    def check(self) -> None:
        """Raise the collected problems, if any."""
        if self.items:
            raise ValidationError(self.items)


def _bad_json(exc: Exception) -> ApiError:
    return ApiError(400, f"request body is not valid JSON: {exc}")


def parse_json(raw: bytes) -> Any:
    """Parse a UTF-8 JSON body; 400 ``invalid_json`` on anything else (NaN and Infinity included)."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _bad_json(exc) from None


def _decode(decoder: msgspec.json.Decoder[S], raw: bytes, refused: Callable[[Any], object]) -> S:
    """``raw`` as the decoder's Struct; 400 if it is not JSON. A body msgspec refuses gets the answer
    ``refused`` (the dict path) gives its JSON: the 422 naming every bad field, or a 413."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:  # (a subclass of DecodeError)
        value = parse_json(raw)  # msgspec stops at the first bad field: the JSON may still be broken later
        refused(value)
        raise ValidationError(explain(exc, value, decoder.type)) from None  # (the same schema refused it)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _bad_json(exc) from None


#: The checks across fields of a body: ``(body, fields that did not decode, problems)``.
Checks = Callable[[S, frozenset[str], Problems], object]


def _convert(body: Any, schema: type[S], checks: Checks[S] | None = None) -> S:
    """A body given as Python values, checked by the same schema as the API's bytes. If the schema
    refuses it, ``checks`` (the checks across fields) still run on the fields that decode: see
    :func:`_partial`."""
    bad = _non_finite(body)
    if bad is not None:
        raise ValidationError([(bad, "must be a finite number")])
    try:
        return msgspec.convert(body, schema)
    except msgspec.ValidationError as exc:
        p = Problems()
        p.items.extend(explain(exc, body, schema))
        partial = _partial(body, schema) if checks is not None else None
        if checks is not None and partial is not None:
            checks(partial[0], partial[1], p)
        raise ValidationError(p.items[:MAX_PROBLEMS]) from None


def _partial(body: Any, schema: type[S]) -> tuple[S, frozenset[str]] | None:
    """A refused body's fields that decode, in a ``schema`` (the others at their defaults, None where
    required), and the names of the others (for the checks that need a required one)."""
    if not isinstance(body, dict):
        return None
    good: dict[str, Any] = {}
    bad: set[str] = set()
    for f in msgspec.structs.fields(schema):
        try:
            if f.encode_name in body:
                good[f.name] = msgspec.convert(body[f.encode_name], f.type)
            elif f.required:
                bad.add(f.name)
        except msgspec.ValidationError:
            bad.add(f.name)
        if f.name in bad and f.required:
            good[f.name] = None  # Struct() does not check types; the checks skip what is in `bad`
    return schema(**good), frozenset(bad)


def _non_finite(value: Any, field: str = "") -> str | None:
    """The first field holding NaN or an infinity: JSON cannot carry them (the decoder refuses them), a
    dict can, and ``msgspec.convert`` lets them through where a number has no bounds."""
    if isinstance(value, float):
        return field if field and not math.isfinite(value) else None
    if isinstance(value, dict):
        children = [(f"{field}.{k}" if field else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{field}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for where, child in children:
        found = _non_finite(child, where)
        if found is not None:
            return found
    return None


# -- flags ----------------------------------------------------------------------------------------------


def decode_body(decoder: msgspec.json.Decoder[S], raw: bytes, schema: type[S]) -> S:
    """A body of another route (segments) decoded by its Struct: 400 if it is not JSON, 422 naming every
    field the schema refuses."""
    return _decode(decoder, raw, lambda value: _convert(value, schema))


def convert_body(body: Any, schema: type[S]) -> S:
    """A body of another route given as Python values (the console's segment forms), checked by the
    same schema as its bytes: 422 naming every field the schema refuses."""
    return _convert(body, schema)


def new_flag_from_json(raw: bytes, default_interval: float) -> tuple[NewFlag, str]:
    """A ``POST /v1/flags`` body: the new flag and the reason for the audit log."""
    body = _decode(_NEW_FLAG, raw, lambda value: validate_new_flag(value, default_interval))
    return _new_flag(body, default_interval), body.reason.strip()


def validate_new_flag(body: Any, default_interval: float) -> NewFlag:
    """A flag creation body given as a dict (its ``reason``, if any, is checked and left out)."""
    return _new_flag(_convert(body, NewFlagBody, _flag_checks), default_interval)


def _new_flag(body: NewFlagBody, default_interval: float) -> NewFlag:
    p = Problems()
    variants, control, objective, policy, guardrails = _flag_checks(body, frozenset(), p)
    keys = [v["key"] for v in variants]
    targets, rules = targets_json(body.targets, keys, p), rules_json(body.rules, keys, p)
    p.check()
    assert policy is not None
    interval = default_interval if body.recompute_interval is UNSET else body.recompute_interval
    return NewFlag(
        body.key, body.description, variants, control, objective, policy, body.state, body.exploration,
        body.baseline, float(interval), guardrails, targets, rules,
    )  # fmt: skip


def _flag_checks(
    body: NewFlagBody, bad: frozenset[str], p: Problems
) -> tuple[list[dict[str, Any]], int, dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """The checks across the fields of a flag body, and what they give: variants, the control's index,
    objective, policy, guardrails (those of a body whose ``bad`` variants did not decode are skipped)."""
    variants = [] if "variants" in bad else _variants(body.variants, p)
    control = 0
    if body.control is not UNSET:
        keys = [v["key"] for v in variants]
        if body.control in keys:
            control = keys.index(body.control)
        elif variants:  # across fields: the control names one of the variants given
            p.add("control", "must be the key of one of the variants")
    objective = msgspec.structs.asdict(body.objective or Objective())
    policy = None
    if "variants" not in bad:
        given = body.policy if body.policy is not UNSET else {"name": default_policy(len(body.variants))}
        policy = _policy(given, objective, len(body.variants), p)
    return variants, control, objective, policy, _guardrails(body.guardrails, p)


def _variants(items: list[VariantItem], p: Problems) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        variant = Variant(item, item) if isinstance(item, str) else item
        value = variant.key if variant.value is UNSET else variant.value
        if variant.key in seen:  # uniqueness within a list: not a schema constraint
            p.add(f"variants[{i}].key", f"duplicate variant key {variant.key!r}")
            continue
        seen.add(variant.key)
        try:  # the size of a JSON value, as the config serves it: not a schema constraint either
            size = len(dumps(value))
        except (TypeError, ValueError):
            p.add(f"variants[{i}].value", "must be JSON")
            continue
        if size > MAX_VALUE_BYTES:
            p.add(f"variants[{i}].value", f"must be at most {MAX_VALUE_BYTES} bytes of JSON")
            continue
        out.append({"key": variant.key, "value": value})
    return out


def default_policy(k: int) -> str:
    """The policy of a flag created without one: a bandit, or for one variant a plain flag."""
    return "fixed" if k == 1 else "thompson"


def _policy(policy: dict[str, Any], objective: dict[str, Any], k: int, p: Problems) -> dict[str, Any] | None:
    """The user's policy parameters if the engine takes them for ``k`` arms (they depend on the flag).

    A flag with one variant is a plain flag, not an experiment: only ``fixed`` serves it (a bandit with
    one arm would learn nothing and show a P(best) of 100%)."""
    problems = 0
    try:
        PolicyParams.from_dict(policy, objective, k)
    except ParamError as exc:
        for field, message in exc.errors:
            p.add(field, message)
        problems = len(exc.errors)
    if k == 1 and policy.get("name", "thompson") != "fixed":
        p.add(
            "policy.name",
            "a flag with one variant is a plain flag, not an experiment: its policy is fixed (or leave the "
            "policy out); a bandit needs two variants or more",
        )
        problems += 1
    return None if problems else dict(policy)


def _guardrails(items: list[Guardrail], p: Problems) -> list[dict[str, Any]]:
    """Guardrails as stored, defaults filled in; a metric is declared once (not a schema constraint)."""
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, g in enumerate(items):
        if g.metric in names:
            p.add(f"guardrails[{i}].metric", f"duplicate metric {g.metric!r}")
        names.add(g.metric)
        out.append(
            {
                "direction": g.direction,
                "reward": g.reward,
                "tolerance": g.tolerance,
                "relative": g.relative,
                "confidence": g.confidence,
                "metric": g.metric,
            }
        )
    return out


class _FlagFacts(NamedTuple):
    """What a PATCH is checked against: the flag's policy, objective, number of arms, keys and control."""

    policy: dict[str, Any]
    objective: dict[str, Any]
    k: int
    keys: list[str]
    control: str | None

    @classmethod
    def of(cls, flag: Flag) -> _FlagFacts:
        keys = [v["key"] for v in flag.variants]
        return cls(flag.policy, flag.objective, flag.k, keys, keys[flag.control])


def patch_from_json(raw: bytes) -> tuple[Callable[[Flag], FlagPatch], str]:
    """A ``PATCH /v1/flags/{key}`` body: its validator against the flag (for
    :func:`service.flags.patch_flag`) and the reason for the audit log; 400 now if it is not JSON."""
    try:
        body = _PATCH.decode(raw)
    except msgspec.ValidationError:
        # Refused once the flag is found, with the checks only the flag allows (as for a dict).
        return patch_validator(parse_json(raw)), ""
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _bad_json(exc) from None
    return (lambda flag: _patch(body, _FlagFacts.of(flag))), body.reason.strip()


def patch_validator(body: Any) -> Callable[[Flag], FlagPatch]:
    """A validator of the dict ``body`` as a PATCH of a given flag (for :func:`service.flags.patch_flag`)."""

    def validate(flag: Flag) -> FlagPatch:
        return _patch_dict(body, _FlagFacts.of(flag))

    return validate


def validate_patch(
    body: Any,
    *,
    current_policy: dict[str, Any],
    objective: dict[str, Any],
    k: int,
    variant_keys: list[str] | None = None,
    control: str | None = None,
) -> FlagPatch:
    """Validate a PATCH body against the flag; ``policy`` is merged into the current parameters."""
    return _patch_dict(body, _FlagFacts(current_policy, objective, k, variant_keys or [], control))


def _patch_dict(body: Any, facts: _FlagFacts) -> FlagPatch:
    def checks(partial: PatchBody, bad: frozenset[str], p: Problems) -> None:
        _patch_changes(partial, facts, p)  # the fields that did not decode are UNSET: skipped

    return _patch(_convert(body, PatchBody, checks), facts)


def _patch(body: PatchBody, facts: _FlagFacts) -> FlagPatch:
    p = Problems()
    changes = _patch_changes(body, facts, p)
    p.check()
    return FlagPatch(changes)


def _patch_changes(body: PatchBody, facts: _FlagFacts, p: Problems) -> dict[str, Any]:
    """The changes a PATCH body asks for, with the checks against the flag."""
    out: dict[str, Any] = {}
    if body.state is not UNSET:
        out["state"] = body.state
    if body.exploration is not UNSET:
        out["exploration"] = body.exploration
    if body.baseline is not UNSET:
        out["baseline"] = body.baseline
    if body.description is not UNSET:
        out["description"] = body.description
    if body.recompute_interval is not UNSET:
        out["recompute_interval"] = body.recompute_interval
    if body.guardrails is not UNSET:
        out["guardrails"] = _guardrails(body.guardrails, p)
    if body.disabled is not UNSET:
        # The operator's list of disabled variants: leaving one out re-enables it. Which keys exist is
        # the flag's (in the database), not the schema's.
        for i, key in enumerate(body.disabled):
            if key not in facts.keys:
                p.add(f"disabled[{i}]", "must be the key of one of the variants")
            elif key == facts.control:
                p.add(f"disabled[{i}]", "the control cannot be disabled")
        out["disabled"] = list(dict.fromkeys(body.disabled))
    if body.targets is not UNSET:
        out["targets"] = targets_json(body.targets, facts.keys, p)
    if body.rules is not UNSET:
        out["rules"] = rules_json(body.rules, facts.keys, p)
    if body.policy is not UNSET:
        checked = _policy({**facts.policy, **body.policy}, facts.objective, facts.k, p)
        if checked is not None:
            out["policy"] = checked
    return out


def reason_from_json(raw: bytes) -> str:
    """The reason of a ``DELETE /v1/flags/{key}`` body (``{"reason": "..."}`` and nothing else)."""
    return _decode(_DELETE, raw, lambda value: _convert(value, DeleteBody)).reason.strip()


# -- events ---------------------------------------------------------------------------------------------


def events_from_json(raw: bytes) -> tuple[EventBatch, SdkReport]:
    """A ``POST /v1/events`` body: the batch and what it says of the SDK's config (the hot path)."""
    body = _decode(_EVENTS, raw, validate_events)
    return _batch(body), (body.config_revision, body.config_age)


def validate_events(body: Any) -> EventBatch:
    """An events batch given as a dict; 413 if it has more than :data:`MAX_ROWS` rows."""
    _row_cap(body)
    return _batch(_convert(body, EventsBody))


def _row_cap(value: Any) -> None:
    """413 for too many rows, before any row is looked at (the cap spans two lists)."""
    if isinstance(value, dict):
        lists = (value.get("exposures"), value.get("rewards"))
        _check_rows(sum(len(v) for v in lists if isinstance(v, list)))


def _check_rows(n_rows: int) -> None:
    if n_rows > MAX_ROWS:
        raise ApiError(
            413, f"a batch has at most {MAX_ROWS} rows (exposures + rewards), got {n_rows}", field="exposures"
        )


def _batch(body: EventsBody) -> EventBatch:
    exposures = body.exposures or []
    rewards = body.rewards or []
    _check_rows(len(exposures) + len(rewards))
    _check_ids(rewards)
    return EventBatch(
        body.batch_id,
        [
            EventRow(f"exposures[{i}]", r.flag, r.version, r.arm, r.count, rule=r.rule or "")
            for i, r in enumerate(exposures)
        ],
        [
            EventRow(
                f"rewards[{i}]",
                r.flag,
                r.version,
                r.arm,
                r.count,
                True,
                r.sum,
                r.sum_sq,
                r.metric,
                r.ids,
                r.rule or "",
            )
            for i, r in enumerate(rewards)
        ],
        body.sdk,
        body.dropped,
    )


def _check_ids(rewards: list[RewardRow]) -> None:
    """Decision ids: at most ``sum`` per row (one per conversion), none on a guardrail metric's row, at
    most :data:`MAX_IDS` per batch (413, like the row cap). Whether the flag's objective is binary is the
    store's to check (it knows the flag)."""
    p = Problems()
    total = 0
    for i, r in enumerate(rewards):
        if r.ids is None:
            continue
        total += len(r.ids)
        if r.metric is not None:
            p.add(f"rewards[{i}].ids", "decision ids are for the objective's conversions, not a metric's")
        elif len(r.ids) > r.sum:
            p.add(
                f"rewards[{i}].ids",
                f"at most sum ({r.sum:g}) ids: one per conversion counted in this row, got {len(r.ids)}",
            )
    if total > MAX_IDS:
        raise ApiError(
            413, f"a batch has at most {MAX_IDS} decision ids (rewards[].ids), got {total}", field="rewards"
        )
    p.items = p.items[:MAX_PROBLEMS]
    p.check()
