"""Public value types: :class:`Decision`, :class:`Reason`, :class:`ErrorType`, :class:`ClientStats`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._token import make_token

__all__ = ["TOKEN_REASONS", "Bucketed", "ClientStats", "Decision", "ErrorType", "Reason"]


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


_SPLIT, _STALE, _CACHED = Reason.SPLIT, Reason.STALE, Reason.CACHED  # Reason.X costs ~0.1 µs a read


def bucketed(reason: object) -> bool:
    """``reason in TOKEN_REASONS`` by identity: an Enum's ``__hash__`` is a Python call, too slow for
    ``track()``. (A plain string equal to a reason is no Reason: tokens come only from real decisions.)"""
    return reason is _SPLIT or reason is _STALE or reason is _CACHED


_DECISION_ID = 11  # Decision.decision_id, the one field not compared
_tuple_new = tuple.__new__


def _hex_getter(index: int, fmt: str) -> Any:
    """The getter of ``trace_id`` / ``span_id``: a decision made inside a trace keeps its span's ids
    as the ints the span context holds and formats them when read (most decisions' ids are never
    read: formatting both on every traced decision cost ~0.2 µs)."""

    def get(self: tuple[Any, ...]) -> str | None:
        v = self[index]
        return fmt % v if v.__class__ is int else v

    return get


class Decision(tuple):  # type: ignore[type-arg]  # fields typed below, for readers and mypy
    """The full result of :meth:`banditflags.Client.decide`: an immutable record.

    ``variant`` is the served variant's key (``None`` when the caller's default was returned),
    ``value`` its JSON value (or the default), ``version`` the allocation version, ``arm`` the arm
    index and ``propensity`` the probability the unit had of landing on that arm (the arm's share of
    the table; ``1.0`` for a killed flag's control arm). ``trace_id`` and ``span_id`` (hex) name the
    decision's ``feature_flag.evaluation`` span when it was made inside a recording trace. ``rule``
    says what served the unit (DESIGN.md §9): a targeting rule's id, ``"target"`` for an individual
    target, ``None`` for the flag's default allocation (and for killed flags and errors).
    ``decision_id`` (16 hex digits) is the decision's own id: a binary objective counts one
    conversion per id (per unit, arm and credit window for unit ``user``, whose id is a hash of the
    unit id). It is in the token and not compared: two decisions are equal when they decided the same.

    Like ``os.stat_result``, a Decision is a tuple underneath (its fields in the order above): a
    decision is made on every request, and building a tuple is one C call where a frozen dataclass
    sets its 13 fields one Python call at a time (1.45 µs against 0.13 µs, measured). Read it by
    field name; it compares, hashes, pickles and prints as a record. ``decide()`` returns a private
    subclass for a unit bucketed on a flag's default allocation (its type saves ``track()`` checking
    each field): test with ``isinstance``, not ``type(d) is Decision``.

    >>> d = Decision("checkout-button", "green", "#0f0", Reason.SPLIT, 3, 1, 0.5,
    ...              decision_id="9f86d081884c7d65")
    >>> d.token
    'bf2:checkout-button:3:1:9f86d081884c7d65'
    >>> d.variant, d.rule, d == Decision("checkout-button", "green", "#0f0", Reason.SPLIT, 3, 1, 0.5)
    ('green', None, True)
    >>> Decision("x", None, "dflt", Reason.ERROR, error_type=ErrorType.FLAG_NOT_FOUND).token is None
    True
    >>> Decision("checkout-button", "green", "#0f0", Reason.SPLIT, 1, 1, 1.0, rule="staff").token
    'bf1:checkout-button/staff:1:1'
    """

    __slots__ = ()
    __match_args__ = (
        "flag",
        "variant",
        "value",
        "reason",
        "version",
        "arm",
        "propensity",
        "error_type",
        "error_message",
        "trace_id",
        "span_id",
        "decision_id",
        "rule",
    )

    if TYPE_CHECKING:
        flag: str
        variant: str | None
        value: Any
        reason: Reason
        version: int | None
        arm: int | None
        propensity: float | None
        error_type: ErrorType | None
        error_message: str | None
        trace_id: str | None
        span_id: str | None
        decision_id: str | None
        rule: str | None
    else:  # C-level getters: as fast to read as slots
        flag = property(itemgetter(0), doc="The flag's key.")
        variant = property(itemgetter(1), doc="The served variant's key, or None (the caller's default).")
        value = property(itemgetter(2), doc="The served variant's JSON value, or the caller's default.")
        reason = property(itemgetter(3), doc="Why: a :class:`Reason`.")
        version = property(itemgetter(4), doc="The allocation version the unit was bucketed in.")
        arm = property(itemgetter(5), doc="The served arm's index.")
        propensity = property(itemgetter(6), doc="The probability the unit had of this arm.")
        error_type = property(itemgetter(7), doc="What went wrong (reason ERROR): an :class:`ErrorType`.")
        error_message = property(itemgetter(8), doc="The error in words, or None.")
        trace_id = property(_hex_getter(9, "%032x"), doc="The decision span's W3C trace id (hex), or None.")
        span_id = property(_hex_getter(10, "%016x"), doc="The decision span's W3C span id (hex), or None.")
        decision_id = property(itemgetter(11), doc="The decision's id (16 hex digits), or None.")
        rule = property(itemgetter(12), doc="The rule's id, 'target', or None (the default allocation).")

    def __new__(
        cls,
        flag: str,
        variant: str | None,
        value: Any,
        reason: Reason,
        version: int | None = None,
        arm: int | None = None,
        propensity: float | None = None,
        error_type: ErrorType | None = None,
        error_message: str | None = None,
        trace_id: str | int | None = None,  # an int (a span context's) is formatted when read
        span_id: str | int | None = None,
        decision_id: str | None = None,
        rule: str | None = None,
    ) -> Decision:
        fields = (flag, variant, value, reason, version, arm, propensity, error_type, error_message)
        return _tuple_new(cls, (*fields, trace_id, span_id, decision_id, rule))

    def _compared(self) -> tuple[Any, ...]:  # the span ids as read: an int and its hex are one id
        return (*self[:9], self.trace_id, self.span_id, *self[_DECISION_ID + 1 :])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Decision):
            return self._compared() == other._compared()
        # another tuple with the same items is not this record (tuple's own == would say it is)
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Decision):
            return self._compared() != other._compared()
        return True if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        return "Decision(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Decision, (*self[:9], self.trace_id, self.span_id, *self[_DECISION_ID:]))

    @property
    def token(self) -> str | None:
        """A compact string naming (flag, rule, version, arm) and the decision id, for crediting a reward from
        elsewhere (``bf2:flag:version:arm:did``; ``bf1:...`` for a Decision without id).

        ``None`` unless the unit was bucketed (reason ``split``, ``stale`` or ``cached``): killed
        flags and errors record no exposure, so there is nothing to credit. A decision made inside a
        recording trace adds its span's trace and span ids, for ``track()`` to link the reward to it.
        """
        if self[3] not in TOKEN_REASONS or self[4] is None or self[5] is None:
            return None
        return make_token(self[0], self[4], self[5], self.trace_id, self.span_id, self[11], self[12])


class Bucketed(Decision):
    """A :class:`Decision` this SDK made by bucketing a unit on a flag's default allocation (private:
    ``decide()`` returns it as a Decision). Its type vouches for what ``track()`` would otherwise check
    field by field: reason ``split``, ``stale`` or ``cached``, no rule, an ``int`` arm of its version's
    table and a 16-hex-digit decision id. It compares, hashes, pickles and prints as a Decision (a
    pickled one comes back a plain Decision: its version is then no longer the snapshot's object).

    >>> d = Bucketed("f", "green", 1, Reason.SPLIT, 3, 1, 0.5, decision_id="9f86d081884c7d65")
    >>> isinstance(d, Decision), d == Decision(*d), repr(d).startswith("Decision(")
    (True, True, True)
    """

    __slots__ = ()


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
