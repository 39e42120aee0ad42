"""Normalisation and validation of what callers pass in: unit ids, rewards, ``track()`` targets.

Nothing here raises on bad input: it answers ``None``/``False`` and the client turns that into a
``targeting_key_missing`` decision or a rejected (counted) reward.

>>> unit_key(42), unit_key(""), unit_key(True), unit_key("ü")
('42', None, None, 'ü')
>>> is_valid_reward(1), is_valid_reward(True), is_valid_reward(float("nan"))
(True, False, False)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ._config import FlagSnapshot
from ._models import TOKEN_REASONS, Decision
from ._token import TOKEN_PREFIX, parse_token

_PREFIX = TOKEN_PREFIX + ":"

__all__ = ["is_valid_metric", "is_valid_reward", "reward_item", "unit_key"]

_METRIC_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def is_valid_metric(metric: object) -> bool:
    """A guardrail metric name: ``^[a-z0-9][a-z0-9_.-]{0,63}$``.

    >>> is_valid_metric("errors"), is_valid_metric("Latency ms"), is_valid_metric(3)
    (True, False, False)
    """
    return isinstance(metric, str) and _METRIC_RE.fullmatch(metric) is not None


def unit_key(unit_id: object) -> str | None:
    """The slow path of unit id normalisation: a non-empty str (subclasses copied to a plain str) or
    an int other than bool as its decimal string; None for anything else (targeting key missing)."""
    if isinstance(unit_id, str):
        return str.__str__(unit_id) if unit_id else None
    if isinstance(unit_id, int) and not isinstance(unit_id, bool):
        return int.__repr__(unit_id)
    return None


def is_valid_reward(reward: object) -> bool:
    """Finite int or float, not bool (numpy floats subclass float and pass). Never raises."""
    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        return False
    try:
        return math.isfinite(reward)
    except OverflowError:  # an int too large for a float
        return False


def reward_item(
    flags: Mapping[str, FlagSnapshot],
    target: object,
    unit_id: object,
    reward: object,
    metric: object = None,
) -> tuple[Any, ...] | None:
    """The buffer item for a ``track()`` call (see ``_events``), or None to reject the call.

    Rejected: a non-finite or non-numeric reward, a binary flag's reward other than 0 or 1 (for the
    objective; a guardrail ``metric`` takes any finite value), a flag the current config does not know,
    a malformed token, a bad unit id, a flag key without unit id, a malformed metric name.
    """
    if reward.__class__ is float:  # the common case, checked inline: finite (inf - inf is nan)
        if reward - reward != 0.0:
            return None
        r: float = reward
    elif is_valid_reward(reward):
        r = float(reward)  # type: ignore[arg-type]
    else:
        return None
    if metric is not None:
        if not is_valid_metric(metric):
            return None
        item = reward_item(flags, target, unit_id, 0.0)
        return None if item is None else (*item[:-1], r, metric)
    uid: str | None = None
    if unit_id is not None:
        uid = unit_id if unit_id.__class__ is str and unit_id else unit_key(unit_id)
        if uid is None:
            return None
    if isinstance(target, Decision):
        # Its fields, not its token: no formatting and parsing on this path, and trace ids that
        # do not parse (a hand-made Decision) do not stop the reward.
        flag, version, arm, rule = target.flag, target.version, target.arm, target.rule
        if target.reason not in TOKEN_REASONS or type(version) is not int or version < 1:
            return None
        if type(arm) is not int or arm < 0 or (rule is not None and type(rule) is not str):
            return None
    elif isinstance(target, str) and target.startswith(_PREFIX):
        token = parse_token(target)
        if token is None:
            return None
        flag, version, arm, rule = token[0], token[1], token[2], token[5]
    elif isinstance(target, str):
        f = flags.get(target)
        if f is None or uid is None or (f.binary and r != 0.0 and r != 1.0):
            return None
        return ("u", target, uid, r)
    else:
        return None
    f = flags.get(flag)
    if f is None or arm >= len(f.keys) or (f.binary and r != 0.0 and r != 1.0):
        return None
    return ("t", flag, version, arm, rule, uid, r)
