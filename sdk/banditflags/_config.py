"""Validation of the ``GET /v1/config`` payload into immutable snapshots.

A :class:`ConfigSnapshot` is built once per config change and never mutated; the client swaps the
whole object in with one attribute assignment, so the hot path needs no lock. Each
:class:`FlagSnapshot` precomputes everything a decision needs (salt prefix, decoded table, keys,
values, per-arm exposure keys and ready-made ``split`` decisions). A flag with ``targets`` or ``rules``
(DESIGN.md §9) also gets one snapshot per rule and target outcome, built by the same
:func:`build_snapshot`, and a ``route`` that picks among them (:mod:`._routing`).

>>> snap = parse_config({"schema": 1, "revision": 7, "flags": [{
...     "key": "btn", "salt": "s1", "state": "running", "exploration": 1.0, "version": 2,
...     "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}], "control": "a",
...     "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
...     "objective": {"reward": "binary", "unit": "decision"}}]})
>>> flag = snap.flags["btn"]
>>> flag.prefix, flag.keys, flag.propensities, flag.exposure_keys[1], flag.route
('s1.', ('a', 'b'), (0.5, 0.5), ('btn', 2, 1, None), None)
>>> parse_config({"schema": 2})
Traceback (most recent call last):
...
banditflags._exceptions.ConfigError: schema: unsupported schema 2 (expected 1)
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from ._bucketing import TABLE_SIZE, decode_table
from ._exceptions import ConfigError
from ._models import Decision, Reason
from ._routing import Allocation, canonical, with_targeting
from ._targeting import Segments, compile_segments
from ._units import UnitMemory

__all__ = ["ConfigSnapshot", "FlagSnapshot", "Route", "build_snapshot", "parse_config"]

FLAG_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
VARIANT_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
MAX_VARIANTS = 100
MAX_FLAGS = 10_000
MAX_CREDIT_WINDOW = 2_592_000
DEFAULT_CREDIT_WINDOW = 86_400.0
STATES = ("running", "frozen", "killed")
EMPTY_FLAGS: Mapping[str, FlagSnapshot] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FlagSnapshot:
    """One flag, ready for the hot path. Built only by :func:`parse_config`."""

    key: str
    salt: str
    prefix: str  # salt + "." so a decision does one concatenation
    state: str
    killed: bool
    exploration: float
    version: int
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    control: int
    control_key: str
    weights: tuple[float, ...]
    table: bytes
    propensities: tuple[float, ...]
    exposure_keys: tuple[tuple[str, int, int, str | None], ...]  # (flag, version, arm, rule), shared
    decisions: tuple[Decision, ...]  # the reason=split Decision of each arm
    disabled_decision: Decision
    binary: bool
    direction: str
    user_unit: bool
    credit_window: float
    policy: str | None = None  # the bandit policy's name, informational (telemetry)
    # Exposure counting in place (issue 13): one itertools.count per arm, next() on each exposure (atomic
    # under the GIL, no lock); the event worker reads them as deltas. Fresh for every snapshot built.
    counters: tuple[itertools.count[int], ...] = field(default=(), compare=False)
    # Conversions counted in place: ``track()`` appends a conversion's decision id to its arm's list;
    # the event worker swaps each non-empty list for a fresh one at every cut (see ``_aggregate``).
    # Fresh for every snapshot built (shared only with the targeted copy ``route`` wraps around it).
    conversions: list[list[str]] = field(default_factory=list, compare=False)
    # "salt:version:": what track(flag, unit) hashes a unit it has not served with (see _units.unit_did)
    did_prefix: str = field(default="", compare=False)
    # Shared by every snapshot of the flag (its rules' too) and handed over from config to config.
    units: UnitMemory = field(default_factory=lambda: UnitMemory(False), compare=False)
    # Targeting (DESIGN.md §9). ``rule`` names what this snapshot serves: None for the flag's default
    # allocation, a rule's id or "target" for the snapshots ``route`` returns. ``detour`` is the hot
    # path's one check before hashing: the flag is killed, or ``route`` must pick a snapshot first.
    rule: str | None = None
    detour: bool = False
    route: Route | None = field(default=None, compare=False, repr=False)
    # Every other snapshot ``route`` may return (whose counters the event worker reads, and whose unit
    # memory is handed over with the flag's).
    rule_snapshots: tuple[FlagSnapshot, ...] = field(default=(), compare=False, repr=False)
    targeting: str = ""  # the flag's targets, rules and the segments they name, as JSON (equality)


# route(unit_id, attributes) -> the snapshot that serves the unit (never raises; see _routing)
Route = Callable[[str, Any], FlagSnapshot]


@dataclass(frozen=True, slots=True)
class _Flag:
    """What a flag's snapshots share; :func:`build_snapshot` adds an allocation (version, table)."""

    key: str
    salt: str
    state: str
    exploration: float
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    control: int
    binary: bool
    direction: str
    user_unit: bool
    credit_window: float
    policy: str | None
    units: UnitMemory


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """A validated config: its ``revision`` and the flags by key (a read-only mapping)."""

    revision: int
    flags: Mapping[str, FlagSnapshot]


def _is_int(v: object) -> TypeGuard[int]:
    return type(v) is int  # bool is an int subclass; `type() is` rejects it


def _is_number(v: object) -> TypeGuard[float]:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _require(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(path, message)


def parse_config(payload: object) -> ConfigSnapshot:
    """Validate a whole ``/v1/config`` payload; raise :class:`ConfigError` naming the first bad field.

    Unknown fields are ignored, as the protocol asks. A flag's targeting (``targets``, ``rules``,
    ``rule_allocations`` and the ``segments`` it names) that does not compile fails the whole config
    like any other bad field, so the last good config stays in use (DESIGN.md §7).
    """
    _require(isinstance(payload, Mapping), "", "payload must be a JSON object")
    assert isinstance(payload, Mapping)
    schema = payload.get("schema")
    _require(_is_int(schema), "schema", "must be an integer")
    _require(schema == 1, "schema", f"unsupported schema {schema} (expected 1)")
    revision = payload.get("revision")
    _require(_is_int(revision) and revision >= 0, "revision", "must be a non-negative integer")
    assert isinstance(revision, int)
    flags_raw = payload.get("flags")
    _require(isinstance(flags_raw, list), "flags", "must be a list")
    assert isinstance(flags_raw, list)
    _require(len(flags_raw) <= MAX_FLAGS, "flags", f"more than {MAX_FLAGS} flags")
    # Segments compile once for every flag; a bad one only matters to a flag that names it.
    segments = _Segments(payload.get("segments"))
    flags: dict[str, FlagSnapshot] = {}
    for i, raw in enumerate(flags_raw):
        flag = _parse_flag(raw, f"flags[{i}]", segments)
        _require(flag.key not in flags, f"flags[{i}].key", f"duplicate flag key {flag.key!r}")
        flags[flag.key] = flag
    return ConfigSnapshot(revision=revision, flags=MappingProxyType(flags))


class _Segments:
    """The config's segments, compiled (and dumped as JSON, for snapshot equality) only if a flag
    has targeting: a config without targeting pays nothing for them."""

    def __init__(self, raw: object) -> None:
        self.raw = raw
        self._compiled: Segments | None = None
        self._json: str | None = None

    def compiled(self) -> Segments:
        if self._compiled is None:
            self._compiled = compile_segments(self.raw)
        return self._compiled

    def json(self) -> str:
        if self._json is None:
            self._json = canonical(self.raw)
        return self._json


def _parse_flag(raw: object, path: str, segments: _Segments) -> FlagSnapshot:
    _require(isinstance(raw, Mapping), path, "must be an object")
    assert isinstance(raw, Mapping)
    key = raw.get("key")
    _require(
        isinstance(key, str) and FLAG_KEY_RE.match(key) is not None,
        f"{path}.key",
        "must match ^[a-z0-9][a-z0-9_.-]{0,63}$",
    )
    assert isinstance(key, str)
    salt = raw.get("salt")
    _require(isinstance(salt, str), f"{path}.salt", "must be a string")
    assert isinstance(salt, str)
    state = raw.get("state")
    _require(state in STATES, f"{path}.state", "must be one of running, frozen, killed")
    assert isinstance(state, str)
    exploration = raw.get("exploration")
    _require(
        _is_number(exploration) and 0.0 <= exploration <= 1.0,
        f"{path}.exploration",
        "must be a number in [0, 1]",
    )
    assert _is_number(exploration)
    version = _parse_version(raw.get("version"), f"{path}.version")

    keys, values = _parse_variants(raw.get("variants"), f"{path}.variants")
    k = len(keys)
    control_key = raw.get("control")
    _require(
        isinstance(control_key, str) and control_key in keys,
        f"{path}.control",
        "must be one of the variant keys",
    )
    assert isinstance(control_key, str)
    weights = _parse_weights(raw.get("weights"), k, f"{path}.weights")
    table = _parse_table(raw.get("table"), k, f"{path}.table")
    binary, direction, user_unit, credit_window = _parse_objective(raw.get("objective"), f"{path}.objective")
    flag = _Flag(
        key=key,
        salt=salt,
        state=state,
        exploration=float(exploration),
        keys=keys,
        values=values,
        control=keys.index(control_key),
        binary=binary,
        direction=direction,
        user_unit=user_unit,
        credit_window=credit_window,
        policy=_policy_name(raw.get("policy")),
        units=UnitMemory(user_unit),
    )
    plain = build_snapshot(flag, version, weights, table)
    if not raw.get("targets") and not raw.get("rules"):
        return plain  # no targeting: the plain snapshot, as before targeting existed

    def build(v: int, w: tuple[float, ...], t: bytes, rule: str | None) -> FlagSnapshot:
        return build_snapshot(flag, v, w, t, rule)

    allocations = _parse_rule_allocations(raw.get("rule_allocations"), k, f"{path}.rule_allocations")
    return with_targeting(plain, raw, path, segments.compiled(), segments.json, allocations, build)


def _parse_rule_allocations(raw: object, k: int, path: str) -> dict[str, Allocation]:
    """``{rule id: {version, weights, table}}``, each checked like the flag's own allocation."""
    if raw is None:
        return {}
    _require(isinstance(raw, Mapping), path, "must be an object")
    assert isinstance(raw, Mapping)
    out: dict[str, Allocation] = {}
    for rid, alloc in raw.items():
        apath = f"{path}.{rid}"
        _require(isinstance(alloc, Mapping), apath, "must be an object")
        assert isinstance(alloc, Mapping)
        version = _parse_version(alloc.get("version"), f"{apath}.version")
        weights = _parse_weights(alloc.get("weights"), k, f"{apath}.weights")
        out[str(rid)] = (version, weights, _parse_table(alloc.get("table"), k, f"{apath}.table"))
    return out


def _parse_version(raw: object, path: str) -> int:
    _require(_is_int(raw) and raw >= 1, path, "must be an integer >= 1")
    assert isinstance(raw, int)
    return raw


def _parse_weights(raw: object, k: int, path: str) -> tuple[float, ...]:
    _require(isinstance(raw, list) and len(raw) == k, path, f"must be a list of {k} numbers")
    assert isinstance(raw, list)
    for j, w in enumerate(raw):
        _require(_is_number(w) and w >= 0, f"{path}[{j}]", "must be a non-negative number")
    return tuple(float(w) for w in raw)


def build_snapshot(
    flag: _Flag, version: int, weights: tuple[float, ...], table: bytes, rule: str | None = None
) -> FlagSnapshot:
    """The one place a :class:`FlagSnapshot` is made: the flag's default allocation (``rule=None``)
    and every targeting outcome (a rule's id, or ``"target"``) get the same precomputed parts, so the
    hot path treats them alike once a decision has been routed."""
    key, keys, values, k = flag.key, flag.keys, flag.values, len(flag.keys)
    control = flag.control
    propensities = tuple(table.count(bytes((arm,))) / TABLE_SIZE for arm in range(k))
    exposure_keys = tuple((key, version, arm, rule) for arm in range(k))
    decisions = tuple(
        Decision(key, keys[arm], values[arm], Reason.SPLIT, version, arm, propensities[arm], rule=rule)
        for arm in range(k)
    )
    disabled = Decision(key, keys[control], values[control], Reason.DISABLED, version, control, 1.0)
    return FlagSnapshot(
        key=key,
        salt=flag.salt,
        prefix=flag.salt + ".",
        state=flag.state,
        killed=flag.state == "killed",
        exploration=flag.exploration,
        version=version,
        keys=keys,
        values=values,
        control=control,
        control_key=keys[control],
        weights=weights,
        table=table,
        propensities=propensities,
        exposure_keys=exposure_keys,
        decisions=decisions,
        disabled_decision=disabled,
        binary=flag.binary,
        direction=flag.direction,
        user_unit=flag.user_unit,
        credit_window=flag.credit_window,
        policy=flag.policy,
        counters=tuple(itertools.count() for _ in range(k)),
        conversions=[[] for _ in range(k)],
        did_prefix=f"{flag.salt}:{version}:",
        units=flag.units,
        rule=rule,
        detour=flag.state == "killed",
    )


def _policy_name(raw: object) -> str | None:
    # Informational only, so a malformed value is ignored rather than rejecting the config.
    if isinstance(raw, Mapping):
        raw = raw.get("name")
    return raw if isinstance(raw, str) and 0 < len(raw) <= 64 else None


def _parse_variants(raw: object, path: str) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    _require(
        isinstance(raw, list) and 1 <= len(raw) <= MAX_VARIANTS,
        path,
        f"must be a list of 1..{MAX_VARIANTS} variants",
    )
    assert isinstance(raw, list)
    keys: list[str] = []
    values: list[Any] = []
    for j, v in enumerate(raw):
        vpath = f"{path}[{j}]"
        _require(isinstance(v, Mapping), vpath, "must be an object")
        assert isinstance(v, Mapping)
        vkey = v.get("key")
        _require(
            isinstance(vkey, str) and VARIANT_KEY_RE.match(vkey) is not None,
            f"{vpath}.key",
            "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        )
        assert isinstance(vkey, str)
        _require(vkey not in keys, f"{vpath}.key", f"duplicate variant key {vkey!r}")
        _require("value" in v, f"{vpath}.value", "is required")
        keys.append(vkey)
        values.append(v["value"])
    return tuple(keys), tuple(values)


def _parse_table(raw: object, arms: int, path: str) -> bytes:
    _require(isinstance(raw, list) and len(raw) >= 1, path, "must be a non-empty list of [arm, run] pairs")
    assert isinstance(raw, list)
    total = 0
    for j, run in enumerate(raw):
        rpath = f"{path}[{j}]"
        _require(isinstance(run, list) and len(run) == 2, rpath, "must be an [arm, run] pair")
        arm, length = run
        _require(_is_int(arm) and 0 <= arm < arms, rpath, f"arm must be an integer in [0, {arms})")
        _require(_is_int(length) and length >= 0, rpath, "run must be a non-negative integer")
        total += length
        _require(total <= TABLE_SIZE, path, f"runs sum to more than {TABLE_SIZE}")
    _require(total == TABLE_SIZE, path, f"runs sum to {total}, not {TABLE_SIZE}")
    return decode_table(raw)


def _parse_objective(raw: object, path: str) -> tuple[bool, str, bool, float]:
    _require(isinstance(raw, Mapping), path, "must be an object")
    assert isinstance(raw, Mapping)
    reward = raw.get("reward", "binary")
    _require(reward in ("binary", "continuous"), f"{path}.reward", "must be binary or continuous")
    direction = raw.get("direction", "maximize")
    _require(direction in ("maximize", "minimize"), f"{path}.direction", "must be maximize or minimize")
    unit = raw.get("unit", "decision")
    _require(unit in ("decision", "user"), f"{path}.unit", "must be decision or user")
    window = raw.get("credit_window", DEFAULT_CREDIT_WINDOW)
    _require(
        _is_number(window) and 0 < window <= MAX_CREDIT_WINDOW,
        f"{path}.credit_window",
        f"must be a number of seconds in (0, {MAX_CREDIT_WINDOW}]",
    )
    assert _is_number(window)
    return reward == "binary", str(direction), unit == "user", float(window)
