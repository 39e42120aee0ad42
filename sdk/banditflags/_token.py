"""Decision tokens: a compact string naming the exact (flag, rule, version, arm) of a decision, and its id.

A token lets a reward be credited to the arm a unit was actually served even when the reward is
observed in another process (a webhook, a worker): hand ``decision.token`` over, then call
``client.track(token, reward=...)`` there. Flag keys never contain ``:`` (they match
``^[a-z0-9][a-z0-9_.-]{0,63}$``), so the format needs no escaping.

A decision made inside a recording OpenTelemetry trace also carries the W3C trace id (32 hex digits)
and span id (16 hex digits) of its ``feature_flag.evaluation`` span, so that ``track()`` can link the
reward to the decision across requests and processes.

Version 2 (``bf2:flag:version:arm:did[:trace:span]``) adds the **decision id** (16 hex digits), so that a
binary objective counts one conversion per decision however often, and wherever, the token is tracked
(docs/protocol.md, "Conversions count once"). Version 1 tokens (``bf1:flag:version:arm[:trace:span]``)
stay readable; their rewards carry no id and cannot be de-duplicated.

A decision served by a targeting rule (DESIGN.md §9) names the rule after the flag key, separated by
``/`` (which neither flag keys nor rule ids contain): ``bf2:flag/rule:version:arm:did``, ``rule`` being
the rule's id or ``target``. SDKs older than targeting reject such tokens (the reward is counted as
rejected), so hand them only to processes running this version or later.

>>> make_token("checkout-button", 3, 1, did="9f86d081884c7d65")
'bf2:checkout-button:3:1:9f86d081884c7d65'
>>> parse_token("bf2:checkout-button:3:1:9f86d081884c7d65")  # doctest: +NORMALIZE_WHITESPACE
Token(flag='checkout-button', version=3, arm=1, trace_id=None, span_id=None,
      did='9f86d081884c7d65', rule=None)
>>> parse_token("bf1:checkout-button:3:1")
Token(flag='checkout-button', version=3, arm=1, trace_id=None, span_id=None, did=None, rule=None)
>>> make_token("checkout-button", 7, 0, did="9f86d081884c7d65", rule="us")
'bf2:checkout-button/us:7:0:9f86d081884c7d65'
>>> parse_token("bf2:checkout-button/us:7:0:9f86d081884c7d65").rule
'us'
>>> t = make_token("btn", 3, 1, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "9f86d081884c7d65")
>>> t
'bf2:btn:3:1:9f86d081884c7d65:4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7'
>>> parse_token(t).span_id, parse_token(t).did
('00f067aa0ba902b7', '9f86d081884c7d65')
>>> parse_token("garbage") is None
True
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["TOKEN_PREFIX", "TOKEN_PREFIXES", "Token", "make_token", "parse_token"]

TOKEN_PREFIX = "bf1"  # the first version's; see TOKEN_PREFIXES
TOKEN_PREFIXES = ("bf1:", "bf2:")  # str.startswith() takes the tuple: what a token starts with
MAX_TOKEN_LENGTH = 245  # bf2, flag 64, "/" rule 64, version, arm, did, trace and span ids

# One anchored regex per version (one C call: cheaper than checking the parts in Python). \Z so a
# trailing newline is garbage too; ASCII digits only; trace ids lower-case hex, as W3C writes them.
# The optional "/rule" after the flag key names the targeting rule (or "target") that served the unit.
_FLAG = (
    r"([a-z0-9][a-z0-9_.-]{0,63})(?:/([A-Za-z0-9][A-Za-z0-9_.-]{0,63}))?"
    r":([1-9][0-9]{0,17}):([0-9]{1,2})"
)
_TRACE = r"(?::([0-9a-f]{32}):([0-9a-f]{16}))?\Z"
_V1 = re.compile("bf1:" + _FLAG + _TRACE)
_V2 = re.compile("bf2:" + _FLAG + ":([0-9a-f]{16})" + _TRACE)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class Token(NamedTuple):
    """The parsed form of a decision token (``trace_id``/``span_id``: hex, or None)."""

    flag: str
    version: int
    arm: int
    trace_id: str | None = None
    span_id: str | None = None
    did: str | None = None  # the decision id (bf2 tokens)
    rule: str | None = None  # the targeting rule's id, "target", or None: the default allocation


def make_token(
    flag: str,
    version: int,
    arm: int,
    trace_id: str | None = None,
    span_id: str | None = None,
    did: str | None = None,
    rule: str | None = None,
) -> str:
    """Return the token string for a decision (with the decision span's ids when both are given); a
    ``bf2`` token when the decision has an id, else the ``bf1`` format."""
    name = flag if rule is None else f"{flag}/{rule}"
    head = f"bf1:{name}:{version}:{arm}" if did is None else f"bf2:{name}:{version}:{arm}:{did}"
    if trace_id and span_id:
        return f"{head}:{trace_id}:{span_id}"
    return head


# Tokens without trace ids are few (flags x versions x arms) and come back all the time: remember the
# parsed ones so that track(token) skips the regex. Bounded; cleared when full.
_parsed: dict[str, Token] = {}
_PARSED_MAX = 4096
_new_token = tuple.__new__  # a NamedTuple's own __new__ is a Python function: 3x slower


def parse_token(token: object) -> Token | None:
    """Parse a token; return ``None`` for anything that is not a well-formed token. Never raises."""
    if type(token) is not str:
        return None
    hit = _parsed.get(token)
    if hit is not None:
        return hit
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    did: str | None
    if token.startswith("bf2:"):
        m = _V2.match(token)
        if m is None:
            return None
        flag, rule, version, arm_s, did, trace_id, span_id = m.groups()
    else:
        m = _V1.match(token)
        if m is None:
            return None
        flag, rule, version, arm_s, trace_id, span_id = m.groups()
        did = None
    arm = int(arm_s)
    if trace_id is not None:
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # W3C: all-zero ids are invalid
            return None
        return _new_token(Token, (flag, int(version), arm, trace_id, span_id, did, rule))
    if did is not None:  # one per decision: not worth remembering
        return _new_token(Token, (flag, int(version), arm, None, None, did, rule))
    parsed: Token = _new_token(Token, (flag, int(version), arm, None, None, None, rule))
    if len(_parsed) >= _PARSED_MAX:
        _parsed.clear()
    _parsed[token] = parsed
    return parsed
