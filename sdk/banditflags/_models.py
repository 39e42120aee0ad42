"""Public value types: :class:`Decision`, :class:`Reason`, :class:`ErrorType`, :class:`ClientStats`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ._token import make_token

__all__ = ["TOKEN_REASONS", "ClientStats", "Decision", "ErrorType", "Reason"]


class Reason(str, enum.Enum):
    """Why a decision came out the way it did (OpenFeature's reasons, lower-cased).

    >>> Reason.SPLIT == "split"
    True
    """

    SPLIT = "split"  # bucketed into the served allocation table
    DISABLED = "disabled"  # the flag is killed: everyone gets the control arm
    DEFAULT = "default"
    STALE = "stale"  # bucketed, but the config has not been confirmed for longer than stale_after
    CACHED = "cached"  # bucketed from the bootstrap config, before any server answer
    ERROR = "error"  # see Decision.error_type

    def __str__(self) -> str:
        return self.value


class ErrorType(str, enum.Enum):
    """What went wrong when a decision's reason is :attr:`Reason.ERROR` (OpenFeature's codes, lower-cased).

    >>> ErrorType("flag_not_found") is ErrorType.FLAG_NOT_FOUND
    True
    """

    FLAG_NOT_FOUND = "flag_not_found"
    PROVIDER_NOT_READY = "provider_not_ready"
    TARGETING_KEY_MISSING = "targeting_key_missing"
    PARSE_ERROR = "parse_error"
    GENERAL = "general"

    def __str__(self) -> str:
        return self.value


TOKEN_REASONS = frozenset({Reason.SPLIT, Reason.STALE, Reason.CACHED})


def bucketed(reason: object) -> bool:
    """``reason in TOKEN_REASONS`` by identity: an Enum's ``__hash__`` is a Python call, too slow for
    ``track()``. (A plain string equal to a reason is no Reason: tokens come only from real decisions.)"""
    return reason is Reason.SPLIT or reason is Reason.STALE or reason is Reason.CACHED


@dataclass(frozen=True, slots=True)
class Decision:
    """The full result of :meth:`banditflags.Client.decide`.

    ``variant`` is the served variant's key (``None`` when the caller's default was returned),
    ``value`` its JSON value (or the default), ``version`` the allocation version, ``arm`` the arm
    index and ``propensity`` the probability the unit had of landing on that arm (the arm's share of
    the table; ``1.0`` for a killed flag's control arm). ``trace_id`` and ``span_id`` (hex) name the
    decision's ``feature_flag.evaluation`` span when it was made inside a recording trace. ``rule``
    says what served the unit (DESIGN.md §9): a targeting rule's id, ``"target"`` for an individual
    target, ``None`` for the flag's default allocation (and for killed flags and errors).

    >>> d = Decision("checkout-button", "green", "#0f0", Reason.SPLIT, 3, 1, 0.5,
    ...              decision_id="9f86d081884c7d65")
    >>> d.token
    'bf2:checkout-button:3:1:9f86d081884c7d65'
    >>> Decision("x", None, "dflt", Reason.ERROR, error_type=ErrorType.FLAG_NOT_FOUND).token is None
    True
    >>> Decision("checkout-button", "green", "#0f0", Reason.SPLIT, 1, 1, 1.0, rule="staff").token
    'bf1:checkout-button/staff:1:1'
    """

    flag: str
    variant: str | None
    value: Any
    reason: Reason
    version: int | None = None
    arm: int | None = None
    propensity: float | None = None
    error_type: ErrorType | None = None
    error_message: str | None = None
    trace_id: str | None = None  # W3C ids (hex) of the decision's feature_flag.evaluation span
    span_id: str | None = None
    #: The decision's id (16 hex digits): a binary objective counts one conversion per id (per unit,
    #: arm and credit window for unit ``user``, whose id is a hash of the unit id). In the token; not
    #: compared: two decisions are equal when they decided the same.
    decision_id: str | None = field(default=None, compare=False)
    rule: str | None = None  # the targeting rule's id, "target", or None (the default allocation)

    @property
    def token(self) -> str | None:
        """A compact string naming (flag, rule, version, arm) and the decision id, for crediting a reward from
        elsewhere (``bf2:flag:version:arm:did``; ``bf1:...`` for a Decision without id).

        ``None`` unless the unit was bucketed (reason ``split``, ``stale`` or ``cached``): killed
        flags and errors record no exposure, so there is nothing to credit. A decision made inside a
        recording trace adds its span's trace and span ids, for ``track()`` to link the reward to it.
        """
        if self.reason not in TOKEN_REASONS or self.version is None or self.arm is None:
            return None
        return make_token(
            self.flag, self.version, self.arm, self.trace_id, self.span_id, self.decision_id, self.rule
        )


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A point-in-time snapshot of a client's counters (see :meth:`banditflags.Client.stats`).

    ``decisions_queued`` counts events (rewards, and decisions that recorded no exposure) waiting in the
    in-memory buffer now (exposures are counted in place, never queued); ``decisions_dropped`` the
    events dropped because that buffer was full or because a reward could not be attributed;
    ``config_age_seconds`` is the time since the server last sent or confirmed (304) the config,
    ``None`` before any server answer.

    >>> ClientStats().batches_sent
    0
    """

    decisions_queued: int = 0
    decisions_dropped: int = 0
    rewards_rejected: int = 0
    #: Conversions not counted because their decision (or, unit ``user``, the unit on that arm within
    #: the credit window) had converted already; ``track()`` returned False for each.
    duplicates: int = 0
    #: Decisions that asked for a flag key the configuration does not have (a typo?); each key is logged once.
    unknown_flags: int = 0
    batches_sent: int = 0
    batches_failed: int = 0
    batches_dropped: int = 0
    pending_batches: int = 0
    config_revision: int | None = None
    config_age_seconds: float | None = None
    config_errors: int = 0
    last_error: str | None = None
    #: The push stream (``/v1/stream``): open now; connections made; config events applied from it.
    stream_connected: bool = False
    stream_connects: int = 0
    stream_events: int = 0
    #: Answers that refused the sdk key (401/403; said once in the log, then retried every few minutes).
    auth_refusals: int = 0
    #: Answers (429, 503) whose ``Retry-After`` the client waited for before that endpoint's next request.
    throttled: int = 0
