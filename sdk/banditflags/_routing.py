"""A flag's targeting turned into ready-made snapshots and one ``route`` function (DESIGN.md §9).

:func:`with_targeting` runs once per config change, from :func:`banditflags._config.parse_config`. It
compiles the flag's ``targets`` and ``rules`` (:func:`banditflags._targeting.compile_flag`) and builds,
through the same snapshot builder as the flag's own, one :class:`~banditflags._config.FlagSnapshot`
per outcome:

- a bandit rule (``serve: {"bandit": true}``): the rule's own version, weights and table from the
  config's ``rule_allocations``;
- a fixed split (``serve: {"weights": [...]}``): the table the compiler built from the weights
  (DESIGN.md §4 layout), the flag's version;
- a fixed variant, and each variant an individual target serves: a one-arm table (propensity 1),
  the flag's version.

``route(unit_id, attributes)`` is the compiled evaluator itself, whose outcomes are these snapshots
(the flag's plain snapshot when nothing matched), so a decision makes one call to route and then
hashes, records and answers exactly as it does for a flag without targeting. Exposures are keyed
(flag, version, arm, rule).

>>> from banditflags._config import parse_config
>>> snap = parse_config({"schema": 1, "revision": 1, "flags": [{
...     "key": "btn", "salt": "s", "state": "running", "exploration": 1.0, "version": 3,
...     "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}], "control": "a",
...     "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]], "objective": {},
...     "targets": [{"variant": "b", "units": ["alice"]}],
...     "rules": [{"id": "staff", "serve": {"variant": "b"},
...                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}]}]}]})
>>> f = snap.flags["btn"]
>>> f.detour, f.route("alice", None).rule
(True, 'target')
>>> d = f.route("bob", {"email": "b@corp.test"}).decisions[1]
>>> d.variant, d.rule, d.version, d.propensity
('b', 'staff', 3, 1.0)
>>> f.route("bob", {"email": 42}) is f.route("carol", None), f.route("bob", None).rule
(True, None)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._exceptions import ConfigError
from ._targeting import TARGET, Match, Segments, TargetingError, compile_flag

if TYPE_CHECKING:
    from ._config import FlagSnapshot

__all__ = ["Allocation", "Build", "canonical", "with_targeting"]

TABLE_SIZE = 10_000

# A bandit rule's allocation from the config: (version, weights, decoded table).
Allocation = tuple[int, tuple[float, ...], bytes]
# build(version, weights, table, rule) -> a snapshot of the flag with that allocation.
Build = Callable[[int, tuple[float, ...], bytes, "str | None"], "FlagSnapshot"]


def with_targeting(
    plain: FlagSnapshot,
    raw: Mapping[str, Any],
    path: str,
    segments: Segments,
    segments_json: Callable[[], str],
    allocations: Mapping[str, Allocation],
    build: Build,
) -> FlagSnapshot:
    """``plain`` with ``route`` (``plain`` itself if the targeting turns out empty).

    Raises :class:`ConfigError` (path from the config: ``flags[3].rules[2].clauses[0].op``) when the
    targeting does not compile or a bandit rule has no allocation.
    """
    tables = {rid: table for rid, (_, _, table) in allocations.items()}
    k = len(plain.keys)
    one_arm: dict[int, Allocation] = {}  # shared by the fixed-variant rules and targets of the flag

    def fixed(arm: int) -> Allocation:
        if arm not in one_arm:
            weights = tuple(1.0 if j == arm else 0.0 for j in range(k))
            one_arm[arm] = (plain.version, weights, bytes((arm,)) * TABLE_SIZE)
        return one_arm[arm]

    built: list[FlagSnapshot] = []
    targets: dict[int, FlagSnapshot] = {}  # one snapshot per variant that targets serve

    def snapshot(m: Match) -> FlagSnapshot:
        # Called by the compiler once per rule and per target entry: what evaluate() returns for it.
        if m.serve == TARGET and m.variant in targets:
            return targets[m.variant]
        if m.serve == "bandit":
            alloc = allocations[m.rule]  # the compiler checked that there is one
        elif m.serve == "weights" and m.table is not None:
            table = m.table
            alloc = (plain.version, tuple(table.count(bytes((j,))) / TABLE_SIZE for j in range(k)), table)
        else:
            assert m.variant is not None
            alloc = fixed(m.variant)
        snap = build(*alloc, m.rule)
        built.append(snap)
        if m.serve == TARGET and m.variant is not None:
            targets[m.variant] = snap
        return snap

    t = compile_flag(raw, plain.keys, segments, rule_tables=tables, outcome=snapshot, miss=plain)
    if t is None:
        return plain
    if isinstance(t, TargetingError):
        raise ConfigError(f"{path}.{t.path}" if t.path else path, t.message)
    return replace(
        plain,
        detour=True,
        route=t.evaluate,  # the compiled evaluator itself: one call per routed decision
        rule_snapshots=(plain, *built),
        targeting=_signature(raw, segments_json, allocations),
    )


def canonical(value: object) -> str:
    """JSON with sorted keys; ``repr`` for what JSON cannot sort or hold (a bootstrap Mapping's
    non-string keys): equal input, equal text, and never an exception."""
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _signature(
    raw: Mapping[str, Any], segments_json: Callable[[], str], allocations: Mapping[str, Allocation]
) -> str:
    """The flag's targeting as canonical JSON, so that a config change that leaves it alone leaves
    the snapshot equal (listeners are told which flags changed). Segments count only for a flag that
    names some (all of them, then: cheap to decide, rarely wrong)."""
    versions = sorted((rid, v) for rid, (v, _, _) in allocations.items())
    rules = canonical([raw.get("targets"), raw.get("rules"), versions])
    return rules + (segments_json() if '"in_segment"' in rules else "")
