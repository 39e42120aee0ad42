"""Segments (DESIGN.md §9): reusable clauses with ``included`` / ``excluded`` unit ids, compiled once
per config and shared by every flag that names one.

>>> segs = compile_segments([{"key": "beta", "included": ["alice"], "excluded": ["eve"],
...     "clauses": [{"attribute": "plan", "op": "in", "values": ["beta"]}]}])
>>> beta = segs.matchers["beta"]
>>> beta("alice", {}), beta("bob", {"plan": "beta"}), beta("eve", {"plan": "beta"})
(True, True, False)
>>> compile_segments([{"key": "x", "clauses": [{"op": "in_segment", "values": ["x"]}]}]).problems
(TargetingError(path='segments[0].clauses[0].values[0]', message="segment 'x' names itself through x -> x"),)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._clauses import (
    Resolve,
    SegmentMatcher,
    TargetingError,
    all_of,
    as_list,
    compile_clauses,
    join_path,
    unit_set,
)
from ._operators import InvalidRule

__all__ = ["MAX_SEGMENT_DEPTH", "NO_SEGMENTS", "Segments", "compile_segments"]

MAX_SEGMENTS = 1_000
MAX_SEGMENT_UNITS = 100_000  # per segment list (included, excluded)
MAX_SEGMENT_DEPTH = 8  # segments naming segments
SEGMENT_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Segments:
    """The config's segments, compiled once and shared by every flag that names one.

    ``matchers`` holds the good ones by key; ``errors`` the bad ones by key (a flag naming one gets an
    error, other flags are unaffected); ``problems`` every error in config order, for a validator.
    """

    matchers: Mapping[str, SegmentMatcher] = field(default_factory=lambda: _EMPTY)
    errors: Mapping[str, TargetingError] = field(default_factory=lambda: _EMPTY)
    problems: tuple[TargetingError, ...] = ()


NO_SEGMENTS = Segments()


def compile_segments(raw: object) -> Segments:
    """Compile the config's ``segments`` list once for all flags. Never raises.

    A segment matches a unit in its ``excluded`` list never, else a unit in its ``included`` list
    always, else when all its clauses match (a segment without clauses matches only its included
    units). Segments may name other segments (``in_segment``), to a depth of 8, without cycles.
    """
    try:
        return _SegmentCompiler(raw).run()
    except Exception as exc:  # a bug here must not take the config down with a traceback
        return Segments(problems=(TargetingError("segments", f"could not be compiled: {exc!r:.200}"),))


class _SegmentCompiler:
    def __init__(self, raw: object) -> None:
        self.raw = raw
        self.entries: dict[str, tuple[int, Mapping[str, Any]]] = {}
        self.matchers: dict[str, SegmentMatcher] = {}
        self.depth: dict[str, int] = {}  # 1 for a segment that names none
        self.errors: dict[str, TargetingError] = {}
        self.problems: list[TargetingError] = []

    def run(self) -> Segments:
        try:
            items = as_list(self.raw, "segments", "segments", MAX_SEGMENTS)
        except InvalidRule as exc:
            return Segments(problems=(TargetingError(exc.path, exc.message),))
        for i, s in enumerate(items):
            key = s.get("key") if isinstance(s, Mapping) else None
            if not isinstance(s, Mapping):
                self.problems.append(TargetingError(f"segments[{i}]", "must be an object"))
            elif not isinstance(key, str) or SEGMENT_KEY_RE.match(key) is None:
                msg = "must match ^[a-z0-9][a-z0-9_.-]{0,63}$"
                self.problems.append(TargetingError(f"segments[{i}].key", msg))
            elif key in self.entries:
                err = TargetingError(f"segments[{i}].key", f"duplicate segment key {key!r}")
                self.problems.append(err)
                self.errors[key] = err
            else:
                self.entries[key] = (i, s)
        for key in self.entries:
            self.compile_with_named(key)
        self.problems.sort(key=lambda e: _order(e.path))
        return Segments(MappingProxyType(self.matchers), MappingProxyType(self.errors), tuple(self.problems))

    def compile_with_named(self, root: str) -> None:
        """Compile ``root`` after the segments it names, depth first without recursion (a long chain
        of segments must not exhaust Python's stack)."""
        path: list[str] = []  # the segments being compiled, outermost first: a cycle is a repeat
        todo: list[tuple[str, Iterator[str]]] = []

        def push(key: str) -> None:
            if (
                key in self.entries
                and key not in self.matchers
                and key not in self.errors
                and key not in path
            ):
                path.append(key)
                todo.append((key, iter(_named_segments(self.entries[key][1]))))

        push(root)
        while todo:
            key, named = todo[-1]
            child = next(named, None)
            if child is not None:
                push(child)
                continue
            todo.pop()
            path.pop()
            self.compile_one(key, path)

    def compile_one(self, key: str, path: list[str]) -> None:
        i, entry = self.entries[key]
        below = 0  # the depth of the deepest segment this one names

        def resolve(k: str) -> SegmentMatcher:
            nonlocal below
            if k in path or k == key:
                raise InvalidRule("", f"segment {k!r} names itself through {' -> '.join((*path, key, k))}")
            matcher = self.matchers.get(k)
            if matcher is not None:
                below = max(below, self.depth[k])
                return matcher
            if k in self.errors:  # by path only: chains of invalid segments would nest messages
                raise InvalidRule("", f"segment {k!r} is invalid (see {self.errors[k].path})")
            raise InvalidRule("", f"unknown segment {k!r:.80}")

        try:
            matcher = _segment(entry, resolve)
            if below >= MAX_SEGMENT_DEPTH:  # bounds the evaluator's recursion
                raise InvalidRule("clauses", f"segments nested more than {MAX_SEGMENT_DEPTH} deep")
        except InvalidRule as exc:
            err = TargetingError(join_path(f"segments[{i}]", exc.path), exc.message)
            self.errors[key] = err
            self.problems.append(err)
            return
        self.matchers[key] = matcher
        self.depth[key] = below + 1


def _named_segments(entry: Mapping[str, Any]) -> list[str]:
    """The keys a segment's well-formed ``in_segment`` clauses name (malformed ones fail to compile)."""
    clauses = entry.get("clauses")
    keys: list[str] = []
    for c in clauses if isinstance(clauses, (list, tuple)) else ():
        values = c.get("values") if isinstance(c, Mapping) and c.get("op") == "in_segment" else None
        keys += [v for v in values if isinstance(v, str)] if isinstance(values, (list, tuple)) else []
    return keys


def _order(path: str) -> tuple[int, str]:
    m = re.match(r"segments\[(\d+)\]", path)
    return (int(m.group(1)) if m else -1, path)


def _segment(entry: Mapping[str, Any], resolve: Resolve) -> SegmentMatcher:
    included = unit_set(entry.get("included"), "included", MAX_SEGMENT_UNITS)
    excluded = unit_set(entry.get("excluded"), "excluded", MAX_SEGMENT_UNITS)
    clauses = all_of(compile_clauses(entry.get("clauses"), "clauses", resolve, empty=True))
    if not included and not excluded:
        return clauses

    def matcher(unit_id: str, attributes: Mapping[str, Any]) -> bool:
        if unit_id in excluded:
            return False
        return unit_id in included or clauses(unit_id, attributes)

    return matcher
