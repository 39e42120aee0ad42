"""OpenTelemetry decision spans and events, and reward correlation (opentelemetry-api only).

The client asks one cheap question per decision: is telemetry possibly on? With the default
``telemetry="span"`` and no tracer provider installed (``opentelemetry.trace.set_tracer_provider``
never called, none passed to the client) the answer costs one global read and nothing else runs.
Otherwise :meth:`Telemetry.active` asks whether the current span is recording; only then does a
decision make a child span ``feature_flag.evaluation`` with the current semantic-convention
attributes (DESIGN.md §7; never the deprecated ``feature_flag.variant`` / ``feature_flag.provider_name``
/ ``feature_flag.evaluation.reason``):

=================================  ==========================================================
``feature_flag.key``               the flag key
``feature_flag.result.variant``    the served variant key (absent when the caller's default was returned)
``feature_flag.result.reason``     ``split``, ``disabled``, ``stale``, ``cached``, ``error``
``feature_flag.provider.name``     ``banditflags``
``feature_flag.version``           the allocation version, as a string
``feature_flag.set.id``            the client's ``flag_set_id`` (default: the server's origin URL)
``feature_flag.context.id``        the unit id, keyed-hashed by default; raw only if opted in; or absent
``error.type``                     on errors: ``flag_not_found``, ``provider_not_ready``, ...
``feature_flag.error.message``     on errors: a short message (never the unit id)
``banditflags.propensity``         the unit's probability of landing on the served arm
``banditflags.policy``             the flag's bandit policy (``thompson``, ``fixed``, ...)
``banditflags.exploration``        the flag's exploration throttle in [0, 1]
``banditflags.rule``               the targeting rule's id or ``target`` (absent: the default allocation)
=================================  ==========================================================

The decision's targeting attributes are never recorded: not as span or event attributes, not in
messages (DESIGN.md §9); only the rule id that matched.

``telemetry="event"`` emits the same attributes as the log-based event ``feature_flag.evaluation``
through the OpenTelemetry logs API instead (its log record carries the active trace and span ids),
for every decision while a logger provider is installed. ``telemetry="off"`` emits nothing.

Rewards: ``track()`` inside a recording span adds a ``banditflags.reward`` event to that span and, when
the decision's span ids are known (a :class:`Decision` or a token made inside a trace), a link to the
decision span, so an APM shows which decision earned which reward, across requests and processes.

Nothing here raises into the caller: every entry point catches and returns a neutral answer.

>>> t = Telemetry(mode="span", tracer_provider=None, logger_provider=None, context_id="hashed",
...               context_id_key=b"k", set_id="http://flags:8080")
>>> t.active()            # no tracer provider installed, no span: nothing to do
False
>>> len(t.context_id("user-42")), t.context_id("user-42") == t.context_id("user-42")
(32, True)
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from opentelemetry import trace as _trace
from opentelemetry._logs import LogRecord, get_logger
from opentelemetry._logs import _internal as _logs_internal
from opentelemetry.context import get_current
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from ._config import FlagSnapshot
from ._models import Bucketed, Decision, Reason
from ._token import TOKEN_PREFIXES, parse_token
from ._version import __version__

__all__ = [
    "EVENT_NAME",
    "PROVIDER_NAME",
    "REWARD_EVENT",
    "SPAN_NAME",
    "ContextIdMode",
    "Mode",
    "Telemetry",
    "tracer_provider_installed",
]

Mode = Literal["span", "event", "off"]
ContextIdMode = Literal["hashed", "raw", "none"]
MODES: tuple[str, ...] = ("span", "event", "off")
CONTEXT_ID_MODES: tuple[str, ...] = ("hashed", "raw", "none")

PROVIDER_NAME = "banditflags"
SPAN_NAME = "feature_flag.evaluation"
EVENT_NAME = "feature_flag.evaluation"
REWARD_EVENT = "banditflags.reward"
_ATTR_CACHE_MAX = 4096
_CID_CACHE_MAX = 10_000  # hashed context ids remembered (per unit id): a recurring unit hashes once
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

# The module whose ``_TRACER_PROVIDER`` global is None until a real provider is installed: the client's
# hot path reads it directly (one load, a few ns) instead of calling get_current_span (~100 ns).
trace_module = _trace

_new = tuple.__new__  # a Decision from its fields in order (see _models.Decision)
_SPLIT = Reason.SPLIT
CONTEXT_ID = "feature_flag.context.id"


def _span_context_is_a_tuple() -> bool:
    """Whether a SpanContext is the API's tuple (trace_id, span_id, is_remote, flags, state, is_valid):
    then a decision reads its span's ids by index (one C call each) instead of three properties."""
    try:
        sc = SpanContext(0x1F, 0x2F, False)
        return isinstance(sc, tuple) and sc[0] == 0x1F and sc[1] == 0x2F and sc[5] is True
    except Exception:
        return False


_SC_TUPLE = _span_context_is_a_tuple()


def tracer_provider_installed() -> bool:
    """True once ``opentelemetry.trace.set_tracer_provider`` has been called in this process."""
    # A future API without the private attribute: assume one is installed (the safe, slower answer).
    return getattr(_trace, "_TRACER_PROVIDER", True) is not None


def _span_key() -> str | None:
    """The key under which the API keeps the current span in a Context (None if it moved)."""
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY

        return _SPAN_KEY if isinstance(_SPAN_KEY, str) else None
    except Exception:
        return None


#: The current span's key in a Context, for the client's span fast path (None: use the public API).
SPAN_KEY = _span_key()


def _current_context_getter() -> Any:
    """A fast ``() -> Context`` for the current context: with the default contextvars runtime context
    one ``ContextVar.get`` (the public ``get_current()`` costs two Python calls more), else the public
    API."""
    try:
        from opentelemetry import context as _ctx

        var = getattr(_ctx._RUNTIME_CONTEXT, "_current_context", None)
        if isinstance(var, contextvars.ContextVar):
            return var.get
    except Exception:  # a different API layout: use the public, slower path
        pass
    return get_current


def _current_span_getter() -> Any:
    """A fast ``() -> Span | None`` for the current span.

    The public ``get_current_span()`` goes through three Python calls; with the default contextvars
    runtime context the same answer is one ``ContextVar.get`` and one dict lookup. Falls back to the
    public API if the runtime context is anything else.
    """
    get, key = _current_context_getter(), SPAN_KEY
    if get is get_current or key is None:
        return _trace.get_current_span

    def current() -> Any:
        return get().get(key)

    return current


class Telemetry:
    """Per-client decision telemetry. Built by :class:`banditflags.Client`; not used directly.

    ``tracer_provider`` / ``logger_provider``: use these instead of the global ones (tests, or an
    application that keeps several providers). ``context_id``: ``"hashed"`` (default: a keyed BLAKE2b
    of the unit id with ``context_id_key``, stable across the processes sharing the key, not
    reversible without it), ``"raw"`` (the unit id itself: only if it is not personal data) or
    ``"none"``.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        tracer_provider: Any,
        logger_provider: Any,
        context_id: ContextIdMode,
        context_id_key: bytes,
        set_id: str | None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"telemetry must be one of {', '.join(MODES)}")
        if context_id not in CONTEXT_ID_MODES:
            raise ValueError(f"telemetry_context_id must be one of {', '.join(CONTEXT_ID_MODES)}")
        self.mode = mode
        self._context_id_mode = context_id
        self.cid_on = context_id != "none"  # a bool for the span path (a string compare costs more)
        # Keyed BLAKE2b, copied per call: cheaper than building a keyed hash from scratch.
        self._cid_hash = hashlib.blake2b(
            digest_size=16, key=hashlib.blake2b(context_id_key, digest_size=32).digest()
        )
        self._set_id = set_id
        self._logger_provider = logger_provider
        # Checked by the hot path when no global tracer provider is installed: an explicit provider,
        # or event mode (which depends on the logs provider instead), must be checked every time.
        self.forced = (mode == "span" and tracer_provider is not None) or mode == "event"
        self._tracer = _trace.get_tracer("banditflags", __version__, tracer_provider=tracer_provider)
        self._logger = get_logger("banditflags", __version__, logger_provider=logger_provider)
        self._current = _current_span_getter()
        # Read by Client.decide's span fast path (Python, and the compiled Decider), which makes
        # a split decision's span itself: the current context's getter in span mode (None otherwise,
        # and when the API's layout is not the one known here), the tracer's start_span, the
        # attribute caches (cleared in place, never rebound: Decider holds these very dicts).
        fast = mode == "span" and SPAN_KEY is not None and _SC_TUPLE
        self.span_context = _current_context_getter() if fast else None
        self.start_span = self._tracer.start_span
        self._attr_cache: dict[tuple[Any, ...], tuple[FlagSnapshot | None, dict[str, AttributeValue]]] = {}
        # A bucketed decision's attributes without the unit's: one dict per (snapshot, arm), keyed by
        # the arm's exposure counter (hashed by identity, alive while it is cached); split decisions
        # apart from the rarer stale and cached ones, so that the reason needs no key of its own.
        self.split_attrs: dict[Any, dict[str, AttributeValue]] = {}
        self._other_attrs: dict[Reason, dict[Any, dict[str, AttributeValue]]] = {}
        self.cid_cache: dict[str, str] = {}
        self.errors = 0  # telemetry failures swallowed (visible in tests and debugging)

    # -- the gate ------------------------------------------------------------------------------

    def active(self) -> bool:
        """Should this decision be recorded? Span mode: the current span is recording. Event mode: a
        logger provider is installed. Never raises."""
        try:
            if self.mode == "span":
                span = self._current()
                return span is not None and span.is_recording()
            if self.mode == "event":
                return self._logger_provider is not None or _logs_internal._LOGGER_PROVIDER is not None
        except Exception:
            self.errors += 1
        return False

    def span_recording(self) -> Any:
        """The current span if it is recording, else None (for rewards). Never raises."""
        try:
            span = self._current()
            if span is not None and span.is_recording():
                return span
        except Exception:
            self.errors += 1
        return None

    # -- decisions -----------------------------------------------------------------------------

    def context_id(self, unit_id: str) -> str:
        """The value of ``feature_flag.context.id`` for a unit, per the client's setting."""
        if self._context_id_mode == "raw":
            return unit_id
        h = self._cid_hash.copy()
        h.update(unit_id.encode("utf-8"))
        return h.hexdigest()

    def attributes(
        self, d: Decision, f: FlagSnapshot | None, unit_id: str | None
    ) -> dict[str, AttributeValue]:
        """The semantic-convention attributes of a decision (cached per flag snapshot, arm and reason)."""
        ck = (d.flag, d.version, d.arm, d.reason, d.variant, d.rule)
        hit = self._attr_cache.get(ck) if d.error_type is None else None
        if hit is not None and hit[0] is f:
            attrs = hit[1]
        else:
            attrs = {
                "feature_flag.key": d.flag,
                "feature_flag.provider.name": PROVIDER_NAME,
                "feature_flag.result.reason": d.reason.value,
            }
            if d.variant is not None:
                attrs["feature_flag.result.variant"] = d.variant
            if d.version is not None:
                attrs["feature_flag.version"] = str(d.version)
            if self._set_id:
                attrs["feature_flag.set.id"] = self._set_id
            if d.propensity is not None:
                attrs["banditflags.propensity"] = d.propensity
            if d.rule is not None:
                attrs["banditflags.rule"] = d.rule
            if f is not None:
                if f.policy is not None:
                    attrs["banditflags.policy"] = f.policy
                attrs["banditflags.exploration"] = f.exploration
            if d.error_type is not None:
                attrs["error.type"] = d.error_type.value
                if d.error_message:
                    attrs["feature_flag.error.message"] = d.error_message
            else:
                if len(self._attr_cache) >= _ATTR_CACHE_MAX:
                    self._attr_cache.clear()
                self._attr_cache[ck] = (f, attrs)
        if unit_id:
            return self.context_attrs(attrs, unit_id)
        return attrs

    def context_attrs(self, base: dict[str, AttributeValue], unit_id: str) -> dict[str, AttributeValue]:
        """``base`` plus this unit's ``feature_flag.context.id`` (the keyed hash cached per unit)."""
        if self._context_id_mode == "none":
            return base
        cid = self.cid_cache.get(unit_id)
        if cid is None:
            cid = self.new_cid(unit_id)
        attrs = base.copy()
        attrs[CONTEXT_ID] = cid
        return attrs

    def new_cid(self, unit_id: str) -> str:
        """The unit's ``feature_flag.context.id``, computed and cached (at most ``_CID_CACHE_MAX``)."""
        cid = self.context_id(unit_id)
        if len(self.cid_cache) >= _CID_CACHE_MAX:
            self.cid_cache.clear()
        self.cid_cache[unit_id] = cid
        return cid

    def bucketed_attrs(self, f: FlagSnapshot, arm: int, reason: Reason) -> dict[str, AttributeValue]:
        """The attributes of a bucketed decision on (``f``, ``arm``) for ``reason``, without the unit's
        ``feature_flag.context.id``: built once, then read from the cache."""
        cache = self.split_attrs if reason is _SPLIT else self._other_attrs.setdefault(reason, {})
        c = f.counters[arm]
        base = cache.get(c)
        if base is None:
            p = f.propensities[arm]
            d = Decision(f.key, f.keys[arm], f.values[arm], reason, f.version, arm, p, rule=f.rule)
            base = self.attributes(d, f, None)
            if len(cache) >= _ATTR_CACHE_MAX:
                cache.clear()
            cache[c] = base
        return base

    def bucketed(self, f: FlagSnapshot, arm: int, reason: Reason, did: str, unit_id: str) -> Decision:
        """A bucketed decision's span (span mode) or event, and its Decision, built once with the span's
        ids (as ints: formatted when read, see _models). The attributes are given at span creation; the
        per-(snapshot, arm, reason) part is cached, the unit's hashed context id too."""
        try:
            base = (self.split_attrs if reason is _SPLIT else self._other_attrs.get(reason, {})).get(
                f.counters[arm]
            )
            if base is None:
                base = self.bucketed_attrs(f, arm, reason)
            if self.mode == "span":
                # The general path now (Client.decide makes the common span itself): no inlining here.
                sc = self.start_span(SPAN_NAME, attributes=self.context_attrs(base, unit_id))
                sc.end()
                ctx = sc.get_span_context()
                if _SC_TUPLE:
                    if ctx[5]:  # is_valid
                        k, v, p, r = f.keys[arm], f.values[arm], f.propensities[arm], f.rule
                        tid, sid = ctx[0], ctx[1]  # ints: formatted when read (see _models.Decision)
                        return _new(
                            Bucketed if r is None else Decision,
                            (f.key, k, v, reason, f.version, arm, p, None, None, tid, sid, did, r),
                        )
                elif ctx.is_valid:
                    fields = (f.key, f.keys[arm], f.values[arm], reason, f.version, arm)
                    ids = (ctx.trace_id, ctx.span_id, did, f.rule)
                    cls = Bucketed if f.rule is None else Decision
                    return _new(cls, (*fields, f.propensities[arm], None, None, *ids))
            else:
                d = Decision(
                    f.key,
                    f.keys[arm],
                    f.values[arm],
                    reason,
                    f.version,
                    arm,
                    f.propensities[arm],
                    decision_id=did,
                    rule=f.rule,
                )
                return self.decision(d, f, unit_id)
        except Exception:
            self.errors += 1
        return Decision(
            f.key,
            f.keys[arm],
            f.values[arm],
            reason,
            f.version,
            arm,
            f.propensities[arm],
            None,
            None,
            None,
            None,
            did,
            f.rule,
        )

    def decision(self, d: Decision, f: FlagSnapshot | None, unit_id: str | None) -> Decision:
        """Record a decision (span or event) and return it with the span's trace ids. Never raises."""
        try:
            attrs = self.attributes(d, f, unit_id)
            sc: SpanContext | None
            if self.mode == "span":
                span = self._tracer.start_span(SPAN_NAME, attributes=attrs)
                if d.error_type is not None:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                sc = span.get_span_context()
            elif self.mode == "event":
                ctx = get_current()
                self._logger.emit(LogRecord(event_name=EVENT_NAME, attributes=attrs, context=ctx))
                cur = self._current()
                sc = cur.get_span_context() if cur is not None else None
            else:
                return d
            if sc is None or not sc.is_valid:
                return d
            return Decision(
                d.flag,
                d.variant,
                d.value,
                d.reason,
                d.version,
                d.arm,
                d.propensity,
                d.error_type,
                d.error_message,
                sc.trace_id,  # ints, formatted when read (see _models.Decision)
                sc.span_id,
                d.decision_id,
                d.rule,
            )
        except Exception:
            self.errors += 1
            return d

    # -- rewards -------------------------------------------------------------------------------

    def reward(self, flags: Mapping[str, FlagSnapshot], target: object, reward: float) -> None:
        """Put an accepted reward on the current recording span, linked to its decision's span."""
        try:
            span = self.span_recording()
            if span is None:
                return
            trace_id = span_id = variant = None
            version: int | None = None
            if isinstance(target, Decision):
                flag = target.flag
                variant, version = target.variant, target.version
                trace_id, span_id = target.trace_id, target.span_id
            elif isinstance(target, str) and target.startswith(TOKEN_PREFIXES):
                tok = parse_token(target)
                if tok is None:
                    return
                flag, version, trace_id, span_id = tok.flag, tok.version, tok.trace_id, tok.span_id
                fs = flags.get(flag)
                if fs is not None and tok.arm < len(fs.keys):
                    variant = fs.keys[tok.arm]
            elif isinstance(target, str):
                flag = target
            else:
                return
            attrs: dict[str, AttributeValue] = {"feature_flag.key": flag, "banditflags.reward": float(reward)}
            if variant is not None:
                attrs["feature_flag.result.variant"] = variant
            if version is not None:
                attrs["feature_flag.version"] = str(version)
            span.add_event(REWARD_EVENT, attrs)
            if trace_id and span_id:
                decision_span = SpanContext(int(trace_id, 16), int(span_id, 16), True, _SAMPLED)
                span.add_link(decision_span, {"feature_flag.key": flag, "banditflags.link": "decision"})
        except Exception:
            self.errors += 1
