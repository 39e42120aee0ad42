"""Validation of request bodies into typed values (docs/protocol.md "Flags", "Events", "Limits").

Every problem is collected with its field path (``variants[1].key``, ``exposures[3].count``) and raised
together as one :class:`~banditflags_server.errors.ValidationError` (422), before anything is written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from banditflags_server.errors import ApiError, ValidationError
from banditflags_server.records import EventBatch, EventRow, Flag, FlagPatch, NewFlag

FLAG_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
VARIANT_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BATCH_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
METRIC_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MAX_GUARDRAILS = 10
MAX_VARIANTS = 100
MAX_VALUE_BYTES = 32 * 1024
MAX_DESCRIPTION = 1000
MAX_ROWS = 10_000
MAX_COUNT = 10**12  # per row; keeps sums far inside a 64-bit integer
STATES = ("running", "frozen", "killed")
BASELINES = ("control", "leader")
OBJECTIVE_DEFAULTS: dict[str, Any] = {
    "reward": "binary",
    "direction": "maximize",
    "unit": "decision",
    "credit_window": 86400,
}
CREATE_FIELDS = {
    "key",
    "description",
    "variants",
    "control",
    "objective",
    "policy",
    "state",
    "exploration",
    "baseline",
    "recompute_interval",
    "guardrails",
}
PATCH_FIELDS = {
    "state",
    "exploration",
    "policy",
    "baseline",
    "description",
    "recompute_interval",
    "guardrails",
    "disabled",
}


class Problems:
    """Collects ``(field, message)`` pairs; :meth:`check` raises them as one 422."""

    def __init__(self) -> None:
        self.items: list[tuple[str | None, str]] = []

    def add(self, field: str | None, message: str) -> None:
        """Record one problem."""
        self.items.append((field, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def check(self) -> None:
        """Raise the collected problems, if any."""
        if self.items:
            raise ValidationError(self.items)


def parse_json(raw: bytes) -> Any:
    """Parse a UTF-8 JSON body; 400 ``invalid_json`` on anything else (NaN and Infinity included)."""

    def _reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """A finite int or float that is not a bool."""
    return (is_int(x) or isinstance(x, float)) and math.isfinite(x)


def require_object(body: Any) -> dict[str, Any]:
    """The body must be a JSON object."""
    if not isinstance(body, dict):
        raise ValidationError([(None, "request body must be a JSON object")])
    return body


def _unknown(body: Mapping[str, Any], allowed: set[str], p: Problems) -> None:
    for name in sorted(set(body) - allowed):
        p.add(name, "unknown field")


def _description(value: Any, p: Problems) -> str:
    if not isinstance(value, str):
        p.add("description", "must be a string")
        return ""
    if len(value) > MAX_DESCRIPTION:
        p.add("description", f"must be at most {MAX_DESCRIPTION} characters")
    return value


def _state(value: Any, p: Problems) -> str:
    if value not in STATES:
        p.add("state", f"must be one of {', '.join(STATES)}")
        return "running"
    return str(value)


def _exploration(value: Any, p: Problems) -> float:
    if not is_number(value) or not 0.0 <= value <= 1.0:
        p.add("exploration", "must be a number in [0, 1]")
        return 1.0
    return float(value)


def _baseline(value: Any, p: Problems) -> str:
    if value not in BASELINES:
        p.add("baseline", f"must be one of {', '.join(BASELINES)}")
        return "control"
    return str(value)


def _interval(value: Any, p: Problems) -> float:
    if not is_number(value) or not 1 <= value <= 86400:
        p.add("recompute_interval", "must be a number of seconds in 1..86400")
        return 60.0
    return float(value)


def _variants(value: Any, p: Problems) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_VARIANTS:
        p.add("variants", f"must be a list of 1..{MAX_VARIANTS} variants")
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"variants[{i}]"
        if isinstance(item, str):
            item = {"key": item, "value": item}
        if not isinstance(item, dict):
            p.add(where, "must be a string or an object {key, value}")
            continue
        for extra in sorted(set(item) - {"key", "value"}):
            p.add(f"{where}.{extra}", "unknown field")
        key = item.get("key")
        if not isinstance(key, str) or not VARIANT_KEY_RE.fullmatch(key):
            p.add(f"{where}.key", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
            continue
        if key in seen:
            p.add(f"{where}.key", f"duplicate variant key {key!r}")
            continue
        seen.add(key)
        val = item.get("value", key)
        try:
            size = len(json.dumps(val, allow_nan=False).encode("utf-8"))
        except ValueError:
            p.add(f"{where}.value", "must be JSON")
            continue
        if size > MAX_VALUE_BYTES:
            p.add(f"{where}.value", f"must be at most {MAX_VALUE_BYTES} bytes of JSON")
            continue
        out.append({"key": key, "value": val})
    return out


def validate_objective(value: Any, p: Problems) -> dict[str, Any]:
    """The objective with its defaults filled in."""
    if value is None:
        return dict(OBJECTIVE_DEFAULTS)
    if not isinstance(value, dict):
        p.add("objective", "must be an object")
        return dict(OBJECTIVE_DEFAULTS)
    out = dict(OBJECTIVE_DEFAULTS)
    for name in sorted(set(value) - set(OBJECTIVE_DEFAULTS)):
        p.add(f"objective.{name}", "unknown field")
    choices = {
        "reward": ("binary", "continuous"),
        "direction": ("maximize", "minimize"),
        "unit": ("decision", "user"),
    }
    for name, allowed in choices.items():
        if name in value:
            if value[name] not in allowed:
                p.add(f"objective.{name}", f"must be one of {', '.join(allowed)}")
            else:
                out[name] = value[name]
    if "credit_window" in value:
        cw = value["credit_window"]
        if not is_number(cw) or not 1 <= cw <= 2_592_000:
            p.add("objective.credit_window", "must be a number of seconds in 1..2592000")
        else:
            out["credit_window"] = cw
    return out


def validate_policy(policy: Any, objective: dict[str, Any], k: int, p: Problems) -> dict[str, Any] | None:
    """Check policy parameters with the engine; returns the user's parameters (or None if invalid)."""
    from banditflags_server.engine import ParamError, PolicyParams

    if not isinstance(policy, dict):
        p.add("policy", "must be an object")
        return None
    if k < 1:
        return None  # variants already reported
    try:
        PolicyParams.from_dict(policy, objective, k)
    except ParamError as exc:
        for f, m in exc.errors:
            p.add(f, m)
        return None
    return dict(policy)


GUARDRAIL_DEFAULTS: dict[str, Any] = {
    "direction": "minimize",
    "reward": "binary",
    "tolerance": 0.1,
    "relative": True,
    "confidence": 0.99,
}


def validate_guardrails(value: Any, p: Problems) -> list[dict[str, Any]]:
    """Guardrail metrics: ``[{"metric", "direction", "reward", "tolerance", "relative", "confidence"}]``.

    An arm is disabled when, with probability ``confidence``, its metric is worse than the control's by
    more than ``tolerance`` (a fraction of the control's mean when ``relative``, else in metric units).
    """
    if not isinstance(value, list) or len(value) > MAX_GUARDRAILS:
        p.add("guardrails", f"must be a list of at most {MAX_GUARDRAILS} guardrails")
        return []
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, g in enumerate(value):
        where = f"guardrails[{i}]"
        if not isinstance(g, dict):
            p.add(where, "must be an object")
            continue
        for extra in sorted(set(g) - {"metric", *GUARDRAIL_DEFAULTS}):
            p.add(f"{where}.{extra}", "unknown field")
        item = {**GUARDRAIL_DEFAULTS, **g}
        metric = item.get("metric")
        if not isinstance(metric, str) or not METRIC_RE.fullmatch(metric):
            p.add(f"{where}.metric", "must match ^[a-z0-9][a-z0-9_.-]{0,63}$")
        elif metric in names:
            p.add(f"{where}.metric", f"duplicate metric {metric!r}")
        else:
            names.add(metric)
        if item["direction"] not in ("minimize", "maximize"):
            p.add(f"{where}.direction", "must be one of minimize, maximize")
        if item["reward"] not in ("binary", "continuous"):
            p.add(f"{where}.reward", "must be one of binary, continuous")
        if not is_number(item["tolerance"]) or item["tolerance"] < 0:
            p.add(f"{where}.tolerance", "must be a number >= 0")
        if not isinstance(item["relative"], bool):
            p.add(f"{where}.relative", "must be true or false")
        if not is_number(item["confidence"]) or not 0.5 <= item["confidence"] < 1:
            p.add(f"{where}.confidence", "must be a number in [0.5, 1)")
        out.append(item)
    return out


def validate_new_flag(body: Any, default_interval: float) -> NewFlag:
    """Validate a flag creation body (all problems reported at once)."""
    body = require_object(body)
    p = Problems()
    _unknown(body, CREATE_FIELDS, p)
    key = body.get("key")
    if not isinstance(key, str) or not FLAG_KEY_RE.fullmatch(key):
        p.add("key", "must match ^[a-z0-9][a-z0-9_.-]{0,63}$")
        key = ""
    description = _description(body.get("description", ""), p)
    variants = _variants(body.get("variants"), p)
    control = 0
    if "control" in body:
        keys = [v["key"] for v in variants]
        if body["control"] not in keys or not isinstance(body["control"], str):
            if variants or not isinstance(body["control"], str):
                p.add("control", "must be the key of one of the variants")
        else:
            control = keys.index(body["control"])
    objective = validate_objective(body.get("objective"), p)
    policy = validate_policy(body.get("policy", {"name": "thompson"}), objective, len(variants), p)
    state = _state(body.get("state", "running"), p)
    exploration = _exploration(body.get("exploration", 1.0), p)
    baseline = _baseline(body.get("baseline", "control"), p)
    interval = _interval(body.get("recompute_interval", default_interval), p)
    guardrails = validate_guardrails(body.get("guardrails", []), p)
    p.check()
    assert policy is not None
    return NewFlag(
        key, description, variants, control, objective, policy, state, exploration, baseline, interval,
        guardrails,
    )  # fmt: skip


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
    body = require_object(body)
    p = Problems()
    _unknown(body, PATCH_FIELDS, p)
    out: dict[str, Any] = {}
    if "state" in body:
        out["state"] = _state(body["state"], p)
    if "exploration" in body:
        out["exploration"] = _exploration(body["exploration"], p)
    if "baseline" in body:
        out["baseline"] = _baseline(body["baseline"], p)
    if "description" in body:
        out["description"] = _description(body["description"], p)
    if "recompute_interval" in body:
        out["recompute_interval"] = _interval(body["recompute_interval"], p)
    if "guardrails" in body:
        out["guardrails"] = validate_guardrails(body["guardrails"], p)
    if "disabled" in body:
        # The operator's list of disabled variants: leaving one out re-enables it.
        d = body["disabled"]
        keys = variant_keys or []
        if not isinstance(d, list) or not all(isinstance(x, str) for x in d):
            p.add("disabled", "must be a list of variant keys")
        else:
            for i, x in enumerate(d):
                if x not in keys:
                    p.add(f"disabled[{i}]", "must be the key of one of the variants")
                elif x == control:
                    p.add(f"disabled[{i}]", "the control cannot be disabled")
            out["disabled"] = list(dict.fromkeys(d))
    if "policy" in body:
        if not isinstance(body["policy"], dict):
            p.add("policy", "must be an object")
        else:
            merged = {**current_policy, **body["policy"]}
            checked = validate_policy(merged, objective, k, p)
            if checked is not None:
                out["policy"] = checked
    p.check()
    return FlagPatch(out)


# -- events ---------------------------------------------------------------------------------------------


def _rows(body: Mapping[str, Any], name: str, p: Problems) -> list[EventRow]:
    value = body.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        p.add(name, "must be a list")
        return []
    out = []
    reward = name == "rewards"
    for i, row in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(row, dict):
            p.add(where, "must be an object")
            continue
        bad = False
        flag = row.get("flag")
        if not isinstance(flag, str) or not flag:
            p.add(f"{where}.flag", "must be a non-empty string")
            bad = True
        for fname, low in (("version", 1), ("arm", 0), ("count", 1)):
            x: Any = row.get(fname)
            if not is_int(x) or not low <= x <= MAX_COUNT:
                p.add(f"{where}.{fname}", f"must be an integer ≥ {low}")
                bad = True
        s: Any = 0.0
        ss: Any = 0.0
        metric = row.get("metric") if reward else None
        if metric is not None and (not isinstance(metric, str) or not METRIC_RE.fullmatch(metric)):
            p.add(f"{where}.metric", "must match ^[a-z0-9][a-z0-9_.-]{0,63}$ or be null")
            bad = True
        if reward:
            s, ss = row.get("sum"), row.get("sum_sq")
            if not is_number(s):
                p.add(f"{where}.sum", "must be a finite number")
                bad = True
            if not is_number(ss) or ss < 0:
                p.add(f"{where}.sum_sq", "must be a finite number ≥ 0")
                bad = True
        if not bad:
            out.append(
                EventRow(
                    where,
                    str(flag),
                    row["version"],
                    row["arm"],
                    row["count"],
                    reward,
                    float(s),
                    float(ss),
                    metric,
                )
            )
    return out


def validate_events(body: Any) -> EventBatch:
    """Validate the shape of an events batch; 413 if it has more than :data:`MAX_ROWS` rows."""
    body = require_object(body)
    p = Problems()
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID_RE.fullmatch(batch_id):
        p.add("batch_id", "must match ^[A-Za-z0-9_-]{8,64}$")
    sent_at = body.get("sent_at")
    if sent_at is not None and not (isinstance(sent_at, str) or is_number(sent_at)):
        p.add("sent_at", "must be an RFC 3339 string or epoch seconds")
    sdk = body.get("sdk", "")
    if not isinstance(sdk, str) or len(sdk) > 200:
        p.add("sdk", "must be a string of at most 200 characters")
        sdk = ""
    dropped = body.get("dropped", 0)
    if not is_int(dropped) or dropped < 0:
        p.add("dropped", "must be an integer ≥ 0")
        dropped = 0
    n_rows = sum(len(body.get(n) or []) for n in ("exposures", "rewards") if isinstance(body.get(n), list))
    if n_rows > MAX_ROWS:
        raise ApiError(
            413, f"a batch has at most {MAX_ROWS} rows (exposures + rewards), got {n_rows}", field="exposures"
        )
    exposures = _rows(body, "exposures", p)
    rewards = _rows(body, "rewards", p)
    p.check()
    return EventBatch(str(batch_id), exposures, rewards, sdk, dropped)


def patch_validator(body: Any) -> Callable[[Flag], FlagPatch]:
    """A validator of ``body`` as a PATCH of a given flag (for :func:`service.flags.patch_flag`)."""

    def validate(flag: Flag) -> FlagPatch:
        return validate_patch(
            body,
            current_policy=flag.policy,
            objective=flag.objective,
            k=flag.k,
            variant_keys=[v["key"] for v in flag.variants],
            control=flag.variants[flag.control]["key"],
        )

    return validate
