"""Normalisation and validation of what callers pass in: unit ids, rewards, ``track()`` targets.

Nothing here raises on bad input: it answers ``None``/``False`` and the client turns that into a
``targeting_key_missing`` decision or a rejected (counted) reward. :func:`reward_item` also says which
decision a reward belongs to (its decision id), for the once-per-decision check of binary objectives.

>>> unit_key(42), unit_key(""), unit_key(True), unit_key("ü")
('42', None, None, 'ü')
>>> is_valid_reward(1), is_valid_reward(True), is_valid_reward(float("nan"))
(True, False, False)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ._bucketing import hash_key
from ._config import FlagSnapshot
from ._models import Decision, bucketed
from ._token import TOKEN_PREFIXES, parse_token
from ._units import did_hex, unit_did

Key = tuple[str, "str | None", int, int]  # (flag, rule, version, arm)
_HEX = HEX_DIGITS = "0123456789abcdef"  # a decision id is 16 of these

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
    now: float = 0.0,
) -> tuple[FlagSnapshot, Key, str | None, float, str | None] | None:
    """Resolve a ``track()`` call to ``(flag snapshot, (flag, rule, version, arm), decision id, reward,
    metric)``, or None to reject it.

    Rejected: a non-finite or non-numeric reward, a binary flag's reward other than 0 or 1 (for the
    objective; a guardrail ``metric`` takes any finite value), a flag the current config does not know,
    a malformed token, a bad unit id, a flag key without unit id, a malformed metric name, a flag key
    of a killed flag whose unit was not served recently (nothing was exposed).

    By flag key and unit: the unit's remembered decision within the credit window (``_units``), else
    the arm it buckets into now; a ``decision``-unit flag then starts remembering its units'
    decisions, and that first reward's decision id is a hash of (salt, version, unit).
    """
    if reward.__class__ is float:  # the common case, checked inline: finite (inf - inf is nan)
        if reward - reward != 0.0:
            return None
        r: float = reward
    elif is_valid_reward(reward):
        r = float(reward)  # type: ignore[arg-type]
    else:
        return None
    if metric is not None and not is_valid_metric(metric):
        return None
    uid: str | None = None
    if unit_id is not None:
        uid = unit_id if unit_id.__class__ is str and unit_id else unit_key(unit_id)
        if uid is None:
            return None
    rule: str | None = None
    did: str | None
    if isinstance(target, Decision):
        # Its fields, not its token: no formatting and parsing on this path, and trace ids that
        # do not parse (a hand-made Decision) do not stop the reward.
        flag, version, arm, did = target.flag, target.version, target.arm, target.decision_id
        rule = target.rule
        if not bucketed(target.reason) or type(version) is not int or version < 1:
            return None
        if type(arm) is not int or arm < 0 or (rule is not None and type(rule) is not str):
            return None
        # 16 lower-case hex digits (strip() of the hex digits leaves nothing: cheaper than a regex)
        if did is not None and (did.__class__ is not str or len(did) != 16 or did.strip(_HEX)):
            did = None  # a hand-made Decision's id: one bad id would make the server refuse the batch
    elif isinstance(target, str) and target.startswith(TOKEN_PREFIXES):
        token = parse_token(target)
        if token is None:
            return None
        flag, version, arm, did, rule = token[0], token[1], token[2], token[5], token[6]
    elif isinstance(target, str):
        f = flags.get(target)
        if f is None or uid is None:
            return None
        return _by_unit(f, uid, r, metric, now)
    else:
        return None
    f = flags.get(flag)
    if f is None or arm >= len(f.keys) or (metric is None and f.binary and r != 0.0 and r != 1.0):
        return None
    if did is None and f.user_unit and uid is not None:
        did = unit_did(f.salt, uid)
    return f, (flag, rule, version, arm), did, r, metric if isinstance(metric, str) else None


def _by_unit(
    f: FlagSnapshot, uid: str, r: float, metric: object, now: float
) -> tuple[FlagSnapshot, Key, str | None, float, str | None] | None:
    if metric is None and f.binary and r != 0.0 and r != 1.0:
        return None
    u = f.units
    e = u.get(uid)
    if e is not None and now - e[2] <= f.credit_window:
        version, arm, _, d, rule = e
        did = did_hex(d) if d is not None else unit_did(f.salt, uid) if f.user_unit else None
    else:
        if f.killed:  # no arm to credit: everyone is on control and nothing was exposed
            return None
        if f.route is not None:  # targeting without the call's attributes: targets and id-only rules
            f = f.route(uid, None)
        version, arm, rule = f.version, f.table[(hash_key(f.prefix + uid) * 10_000) >> 32], f.rule
        if f.user_unit:
            did = unit_did(f.salt, uid)
        else:
            u.on = True  # from now on this flag's decisions are remembered for track(flag, unit)
            d = int(unit_did(f"{f.salt}:{version}", uid), 16)
            u.put(uid, (version, arm, now, d, rule))
            did = did_hex(d)
    return f, (f.key, rule, version, arm), did, r, metric if isinstance(metric, str) else None
