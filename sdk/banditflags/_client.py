"""The public :class:`Client`: the decision path (``variant``, ``decide``, ``track``) over the config
state that :class:`~banditflags._runtime.Runtime` (construction, threads, refresh, flush, close, fork,
listeners, stats) keeps up to date.

Everything in this module runs on the caller's thread for every decision: it reads one immutable
snapshot, hashes once, indexes a table and ticks the arm's exposure counter (``next()`` on an
``itertools.count``: atomic under the GIL, read by the event worker as deltas; see ``_aggregate``).
No locks, no I/O, no logging, no queue, no allocation on the normal path, nothing raised. Unit memory
(``_units``) is touched only for flags that need it (``user`` unit, tracked by unit).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, overload

import mmh3

from . import _units as _ids
from ._config import FlagSnapshot
from ._inputs import HEX_DIGITS as _HEX
from ._inputs import reward_item, unit_key
from ._models import Bucketed, Decision, ErrorType, Reason, bucketed
from ._runtime import Runtime
from ._telemetry import CONTEXT_ID as _CONTEXT_ID
from ._telemetry import SPAN_KEY as _SPAN_KEY
from ._telemetry import SPAN_NAME as _SPAN_NAME
from ._telemetry import trace_module
from ._units import Conversions, UnitMemory, new_did, unit_did
from ._units import keyed_dict as _keyed_dict

try:  # the compiled fast path of track() (_speedups.c); optional: the Python path does the same work
    from . import _speedups
except ImportError:  # pragma: no cover  # built without a C compiler
    _speedups = None  # type: ignore[assignment]

__all__ = ["Attributes", "Client"]

#: What ``attributes=`` takes: name -> str, int, float, bool, datetime, or a list of these (§9).
Attributes = Mapping[str, Any] | None


_hash = mmh3.hash
_hash64 = mmh3.hash64
_seq = _ids._seq  # the decision ids' sequence (next() is atomic under the GIL)
_MASK = (1 << 64) - 1
_monotonic = time.monotonic


class _AlwaysCheck:
    """Stands in for ``opentelemetry.trace`` if a future API drops its private ``_TRACER_PROVIDER``:
    every decision then asks for the current span (the public, slower check) instead of failing."""

    _TRACER_PROVIDER: object = object()


_new = tuple.__new__  # a Decision from its fields in order (see _models.Decision)
_SPLIT, _STALE, _CACHED = Reason.SPLIT, Reason.STALE, Reason.CACHED  # bucketed(): compared by identity


def _provider_probe(module: Any) -> Any:
    """What the hot path reads ``_TRACER_PROVIDER`` from: the API module (None there until a real
    tracer provider is installed: one global read skips telemetry), or :class:`_AlwaysCheck`."""
    return module if hasattr(module, "_TRACER_PROVIDER") else _AlwaysCheck()


_otel = _provider_probe(trace_module)
if _speedups is not None:
    _speedups.configure(FlagSnapshot, Bucketed, UnitMemory, Conversions, _otel)

#: Set to 1 to run track() in Python only (the reference the compiled path is tested against).
NO_SPEEDUPS_ENV = "BANDITFLAGS_NO_SPEEDUPS"


def _remember(f: FlagSnapshot, arm: int, unit_id: str) -> bool:
    """The unit memory of a flag that keeps one (``f.units.on``); False when the exposure must not be
    counted: a ``user``-unit flag's unit already counted on this arm in this credit window."""
    u = f.units
    now = _monotonic()
    if f.user_unit:
        e = u.get(unit_id)
        if (
            e is not None
            and e[1] == arm
            and e[0] == f.version
            and e[4] == f.rule
            and now - e[2] <= f.credit_window
        ):
            return False
        u.put(unit_id, (f.version, arm, now, None, f.rule))
        return True
    u.put(unit_id, (f.version, arm, now, new_did(), f.rule))
    return True


class Client(Runtime):
    """A banditflags client: answers ``variant()`` locally in about a microsecond.

    The constructor does no I/O on the network. Background threads (config sync, event delivery)
    start on the first ``variant``/``decide``/``track`` call, on ``start()`` or ``wait_until_ready()``.
    With ``background=False`` (serverless) no thread ever runs: call ``refresh()`` to fetch the config
    and ``flush()`` to send, both synchronous with a deadline.

    ``variant``, ``decide`` and ``track`` never raise and never block; see :class:`Decision` and
    :class:`Reason` for what a decision says when something is wrong.

    OpenTelemetry (docs/telemetry.md): ``telemetry="span"`` (default) adds a ``feature_flag.evaluation``
    child span to decisions made inside a recording span, ``"event"`` emits the log-based event
    instead, ``"off"`` nothing; ``tracer_provider`` / ``logger_provider`` / ``meter_provider``
    default to the global ones. ``telemetry_context_id`` is ``"hashed"`` (keyed with
    ``telemetry_context_id_key``, by default the sdk key), ``"raw"`` or ``"none"``;
    ``flag_set_id`` (``feature_flag.set.id``) defaults to the server's origin.

    >>> import httpx
    >>> config = {"schema": 1, "revision": 1, "flags": [{
    ...     "key": "checkout-button", "salt": "3f0c", "state": "running", "exploration": 1.0,
    ...     "version": 1, "variants": [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}],
    ...     "control": "blue", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
    ...     "objective": {"reward": "binary", "unit": "decision"}}]}
    >>> def server(request):
    ...     if request.url.path == "/v1/config":
    ...         return httpx.Response(200, json=config, headers={"ETag": '"1"'})
    ...     return httpx.Response(202, json={})
    >>> with Client("http://bf", "bf_sdk_x", transport=httpx.MockTransport(server)) as client:
    ...     client.wait_until_ready(5.0)
    ...     decision = client.decide("checkout-button", "user-42")
    ...     decision.variant in ("blue", "green"), decision.reason
    ...     client.track(decision, reward=1)
    ...     client.variant("no-such-flag", "user-42", "off")
    ...     client.flush(5.0)
    True
    (True, <Reason.SPLIT: 'split'>)
    True
    'off'
    True
    """

    #: decide()'s compiled path inside a recording span (set per client by _bind_fast_paths).
    _decider: Any = None

    # -- decisions (hot path: no locks, no I/O, no logging, nothing raised) ----------------------

    @overload
    def variant(
        self, flag: str, unit_id: str | int | None, default: str, *, attributes: Attributes = None
    ) -> str: ...

    @overload
    def variant(
        self, flag: str, unit_id: str | int | None, default: None = None, *, attributes: Attributes = None
    ) -> str | None: ...

    # Pass ``attributes`` by keyword. The overloads make it keyword-only for type checkers; the
    # runtime signatures of variant() and decide() do not, because on CPython 3.11 a keyword-only
    # parameter with a default costs every call ~70 ns (measured: the call leaves the fast path).
    def variant(
        self,
        flag: str,
        unit_id: str | int | None,
        default: str | None = None,
        attributes: Attributes = None,
    ) -> str | None:
        """The variant key ``unit_id`` gets for ``flag``, or ``default`` (see ``decide`` for when and
        for ``attributes``)."""
        try:
            if not self._started:  # lazy start, whatever the outcome: a not-ready client must sync
                self._start()
            # One global read while no tracer provider is installed (see _telemetry).
            if (_otel._TRACER_PROVIDER is not None or self._tel_forced) and self._tel.active():
                d = self.decide(flag, unit_id, default, attributes)  # its span fast path
                return d.variant if d.variant is not None else default
            f = self._flags[flag]  # subscript beats .get(); a missing flag is the rare path
            if unit_id.__class__ is not str or not unit_id:
                unit_id = unit_key(unit_id)
                if unit_id is None:
                    self._note(
                        flag, None if default is not None else f.control_key, "error", "targeting_key_missing"
                    )
                    return default if default is not None else f.control_key
            if f.detour:  # killed, or targeted: one check, so a plain flag pays nothing for targeting
                if f.killed:  # before targets and rules: a killed flag serves control to everyone
                    self._note(flag, f.control_key, "disabled", "")
                    return f.control_key
                # The matched rule's (or target's) snapshot; set whenever a live flag has a detour.
                f = f.route(unit_id, attributes)  # type: ignore[misc]
            # The same steps as decide(), inlined on purpose: a shared helper call costs ~15% here.
            arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
            if f.units.on and not _remember(f, arm, unit_id):
                return f.keys[arm]
            next(f.counters[arm])  # the exposure, counted in place (atomic under the GIL)
            return f.keys[arm]
        except Exception:  # KeyError (unknown flag) included: never raise into the caller
            self._note(flag, None, "error", "")
            return default

    def _note(self, flag: object, variant: str | None, reason: str, error_type: str) -> None:
        # A decision that records no exposure (error, killed flag), counted by the worker for the
        # decisions metric. Off the normal path; must never raise.
        try:
            q = self._queue
            if len(q) < self._max_queue:
                q.append(("d", flag, variant, reason, error_type))
        except Exception:
            pass

    def decide(
        self, flag: str, unit_id: str | int | None, default: Any = None, attributes: Attributes = None
    ) -> Decision:
        """Bucket ``unit_id`` into ``flag`` and say how and why.

        ``attributes`` (a mapping of name to str, int, float, bool, a datetime, or a list of these)
        feed the flag's targeting, evaluated here, never sent anywhere (DESIGN.md §9): a killed flag
        serves control; then the unit's individual target; then the first rule whose clauses match;
        else the flag's default allocation. ``Decision.rule`` names what served the unit (a rule's
        id, ``"target"``, or None). A missing attribute, a value of the wrong type or anything that is
        not a mapping never raises: such a clause just does not match (docs/targeting.md).

        Reasons: ``split`` (normal), ``stale`` (config not confirmed for ``stale_after`` seconds),
        ``cached`` (bootstrap config, no server answer yet), ``disabled`` (killed flag: control arm,
        no exposure recorded), ``error`` with ``error_type`` ``flag_not_found`` / ``provider_not_ready``
        (caller's default), ``targeting_key_missing`` (caller's default, else the control arm) or
        ``general`` (unexpected failure, caller's default).

        Inside a recording OpenTelemetry span the decision gets its own child span (see
        ``telemetry=``) and the returned Decision carries that span's ``trace_id`` and ``span_id``.

        A bucketed Decision has a ``decision_id`` (in its ``token``): a binary objective counts at most
        one conversion for it, however it is tracked (the Decision, its token in any process, or the
        flag and unit id). For unit ``user`` the id is a hash of the unit id: one conversion per unit,
        arm and credit window.
        """
        d: Decision | None  # what the compiled Decider answered (None: the Python code decides)
        if _otel._TRACER_PROVIDER is not None or self._tel_forced:
            tel = self._tel
            get_context = tel.span_context
            if get_context is None:  # event mode (or a span mode without the fast path's API layout)
                if tel.active():
                    return self._traced_decide(flag, unit_id, default, attributes)
            else:
                try:
                    ctx = get_context()
                    span = ctx.get(_SPAN_KEY)
                    recording = span is not None and span.is_recording()
                except Exception:
                    recording = False
                if recording:
                    # Inside a recording span the common case, a split decision on a started
                    # client's flag without targeting for a str unit id, is made by the compiled
                    # Decider (_speedups.c) or, without it, here in this frame: bucketing, the
                    # exposure and the child span with its cached attributes. Spread over _decide and
                    # Telemetry.bucketed it cost 1.19-1.21x a bare span with the same attributes; in
                    # this frame 1.10-1.16x, compiled 1.04-1.09x (bench/bench_trace.py). Anything
                    # else takes the general path before anything is recorded. The bucketing is
                    # _decide's, inlined as in variant().
                    try:
                        decider = self._decider
                        if decider is not None:
                            d = decider(flag, unit_id, ctx)
                            if d is not None:
                                return d  # else it changed nothing: the Python code below decides
                        st = self._state
                        f = st.flags.get(flag)
                        now = _monotonic()
                        if (
                            f is None
                            or f.detour
                            or f.user_unit
                            or unit_id.__class__ is not str
                            or not unit_id
                            or st.cached
                            or now >= st.stale_at
                            or not self._started
                        ):
                            return self._traced_decide(flag, unit_id, default, attributes)
                        arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
                        counter = f.counters[arm]
                        attrs = tel.split_attrs.get(counter)  # then Telemetry.context_attrs, inlined
                        if attrs is None:
                            attrs = tel.bucketed_attrs(f, arm, _SPLIT)  # built once per snapshot and arm
                        if tel.cid_on:
                            cid = tel.cid_cache.get(unit_id)
                            if cid is None:
                                cid = tel.new_cid(unit_id)
                            attrs = attrs.copy()
                            attrs[_CONTEXT_ID] = cid
                        did = "%016x" % ((_ids._BASE + next(_seq)) & _MASK)
                        u = f.units
                        cur = u.cur
                        cur[unit_id] = (f.version, arm, now, did, None)
                        if len(cur) * 2 > u.cap:
                            u.old = cur
                            u.cur = _keyed_dict()
                        next(counter)
                    except Exception:  # before anything was recorded, or a bug: the general path says which
                        return self._decide(flag, unit_id, default, attributes)
                    tid = sid = None
                    try:  # the exposure is recorded: a failing tracer costs the Decision its ids, no more
                        sc = tel.start_span(_SPAN_NAME, ctx, attributes=attrs)
                        sc.end()
                        c = sc.get_span_context()  # the API's SpanContext tuple (Telemetry checks it is one)
                        if c[5]:  # is_valid
                            tid, sid = c[0], c[1]  # ints: formatted when read (see _models.Decision)
                    except Exception:
                        tel.errors += 1
                    k, v, p = f.keys[arm], f.values[arm], f.propensities[arm]
                    return _new(
                        Bucketed, (f.key, k, v, _SPLIT, f.version, arm, p, None, None, tid, sid, did, None)
                    )
        # Not recorded: the plain case compiled where the extension is built (Decider: about half
        # the CPU of _decide), everything else (and all of it without the extension) by _decide.
        decider = self._decider
        if decider is not None:
            d = decider(flag, unit_id, None)
            if d is not None:
                return d  # else it changed nothing
        return self._decide(flag, unit_id, default, attributes)

    def _traced_decide(
        self, flag: str, unit_id: str | int | None, default: Any, attributes: Attributes
    ) -> Decision:
        d = self._decide(flag, unit_id, default, attributes, True)
        if bucketed(d.reason):  # bucketed: recorded already, by Telemetry.bucketed
            return d
        return self._traced_other(d, unit_id)

    def _traced_other(self, d: Decision, unit_id: str | int | None) -> Decision:
        # A killed flag or an error: no exposure, but still a span (and its ids in the Decision).
        uid = unit_id if unit_id.__class__ is str else unit_key(unit_id)
        return self._tel.decision(d, self._flags.get(d.flag), uid)

    def _decide(
        self,
        flag: str,
        unit_id: str | int | None,
        default: Any,
        attributes: Attributes = None,
        traced: bool = False,
    ) -> Decision:
        try:
            if not self._started:
                self._start()
            st = self._state
            f = st.flags.get(flag)
            if f is None:
                if st.revision is None:
                    self._note(flag, None, "error", "provider_not_ready")
                    return Decision(
                        flag,
                        None,
                        default,
                        Reason.ERROR,
                        error_type=ErrorType.PROVIDER_NOT_READY,
                        error_message="no config yet",
                    )
                self._note(flag, None, "error", "flag_not_found")
                return Decision(
                    flag,
                    None,
                    default,
                    Reason.ERROR,
                    error_type=ErrorType.FLAG_NOT_FOUND,
                    error_message=f"flag {flag!r} not in config revision {st.revision}",
                )
            if unit_id.__class__ is not str or not unit_id:
                unit_id = unit_key(unit_id)
                if unit_id is None:
                    d = self._missing_key(f, default)
                    self._note(f.key, d.variant, "error", "targeting_key_missing")
                    return d
            if f.detour:
                if f.killed:
                    self._note(f.key, f.control_key, "disabled", "")
                    return f.disabled_decision
                f = f.route(unit_id, attributes)  # type: ignore[misc]
            arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
            now = _monotonic()
            u = f.units
            if f.user_unit:
                did = unit_did(f.salt, unit_id)
                if _remember(f, arm, unit_id):
                    next(f.counters[arm])
            else:  # remembered, so that track(flag, unit) finds this decision
                # new_did() and did_hex(), inline: two calls less per decision
                did = "%016x" % ((_ids._BASE + next(_seq)) & _MASK)
                cur = u.cur  # u.put(), inline; the str kept: track(flag, unit) reuses it
                cur[unit_id] = (f.version, arm, now, did, f.rule)
                if len(cur) * 2 > u.cap:
                    u.old = cur
                    u.cur = _keyed_dict()
                next(f.counters[arm])
            # module constants: reading Reason.SPLIT off the Enum class costs ~0.1 µs a time
            reason = _CACHED if st.cached else _STALE if now >= st.stale_at else _SPLIT
            if traced:  # span and Decision made once, with the span's ids (see Telemetry.bucketed)
                return self._tel.bucketed(f, arm, reason, did, unit_id)
            # One C call on one tuple display (unpacking a part into it costs twice as much).
            k, v, p = f.keys[arm], f.values[arm], f.propensities[arm]
            r = f.rule  # Bucketed: track() trusts its fields (see _models.Bucketed)
            return _new(
                Bucketed if r is None else Decision,
                (f.key, k, v, reason, f.version, arm, p, None, None, None, None, did, r),
            )
        except Exception as exc:
            self._note(flag, None, "error", "general")
            return Decision(
                str(flag),
                None,
                default,
                Reason.ERROR,
                error_type=ErrorType.GENERAL,
                error_message=f"{type(exc).__name__}: {exc}",
            )

    @staticmethod
    def _missing_key(f: FlagSnapshot, default: Any) -> Decision:
        msg = "unit_id must be a non-empty str or an int"
        if default is not None:
            return Decision(
                f.key,
                None,
                default,
                Reason.ERROR,
                f.version,
                error_type=ErrorType.TARGETING_KEY_MISSING,
                error_message=msg,
            )
        c = f.control
        return Decision(
            f.key,
            f.control_key,
            f.values[c],
            Reason.ERROR,
            f.version,
            c,
            f.propensities[c],
            ErrorType.TARGETING_KEY_MISSING,
            msg,
        )

    # -- rewards --------------------------------------------------------------------------------

    def _bind_fast_paths(self) -> None:
        # track()'s common calls in C (_speedups.c): this instance's ``track`` attribute becomes a
        # compiled callable that records them as the Python method below does, on the same objects, and
        # hands every other call to that method before changing anything. Skipped where the module was
        # not built, or with BANDITFLAGS_NO_SPEEDUPS=1.
        if _speedups is None or os.environ.get(NO_SPEEDUPS_ENV, "") not in ("", "0"):
            return
        tel = self._tel
        if type(self).decide is Client.decide:  # a subclass's own decide() stays what callers reach
            cids = tel.cid_cache if tel.cid_on else None
            self._decider = _speedups.Decider(
                self, tel, tel.start_span, tel.split_attrs, cids, _ids, _SPLIT, _SPAN_NAME, _CONTEXT_ID
            )
        if type(self).track is not Client.track:
            return  # a subclass's own track() must stay what callers reach
        fallback = Client.track.__get__(self)
        tracker = _speedups.Tracker(self, fallback, self._conversions, self._duplicates, self._tel_forced)
        setattr(self, "track", tracker)  # noqa: B010  # shadows the method on this instance only

    @property
    def speedups(self) -> bool:
        """Whether ``track()``'s common calls run compiled on this client (``_speedups``; see
        docs/performance.md). False where the extension was not built or BANDITFLAGS_NO_SPEEDUPS=1."""
        return self.__dict__.get("track") is not None

    def track(
        self,
        flag_or_decision: str | Decision,
        unit_id: str | int | None = None,
        reward: float = 1.0,
        metric: str | None = None,
    ) -> bool:
        """Record a reward. Never raises; returns False (and counts it) when the reward is rejected or,
        for a binary objective, is a repeat.

        ``flag_or_decision`` is a :class:`Decision`, a decision token (``decision.token``, possibly
        from another process) or a flag key with ``unit_id``: then the reward goes to the decision the
        unit was served recently (within the flag's credit window), else to the arm it buckets into now.
        ``metric`` names a guardrail metric of the flag (e.g. ``"errors"``, ``"latency_ms"``; any finite
        value) instead of the objective.

        Binary objectives accept rewards 0 and 1 and count **at most one conversion per decision**
        (unit ``decision``) or per unit, arm and credit window (unit ``user``), whichever way it is
        tracked: a repeat returns False and is counted in ``stats().duplicates``. The SDK remembers the
        last ``decision_memory_size`` conversions; a repeat older than that is still sent with its
        decision id, and the server takes it out (docs/protocol.md, "Conversions count once").

        Continuous objectives: several rewards for one decision **add up** to that decision's value
        (two purchases after one recommendation: its revenue is their sum); the variance the bandit
        uses is of those per-decision totals.
        """
        try:
            if not self._started:
                self._start()
            d = flag_or_decision
            f = None
            if metric is None and reward.__class__ is float and reward == 1.0:
                # The common calls, track(decision), track(token) and track(flag, unit), checked inline
                # (what reward_item checks, without its calls and tuples): a conversion of the current
                # snapshot's default allocation. Anything unusual takes the general path below.
                if unit_id is None:
                    if d.__class__ is Bucketed:
                        # Made by decide() on a default allocation: bucketed, no rule, an int arm and a
                        # 16-hex-digit id (its type vouches; a hand-made Decision takes the general path).
                        f = self._flags[d[0]]  # an unknown flag: KeyError, rejected as reward_item would
                        arm, did = d[5], d[11]
                        if not (d[4] is f.version and f.binary):  # the current snapshot's version
                            f = None
                    elif d.__class__ is str:
                        # bf2:flag:version:arm:did (no rule, no trace ids): its head looked up whole
                        # (one dict lookup instead of parsing), its id checked here.
                        hit = self._token_heads.get(d[:-17])
                        if hit is not None and d[-17] == ":":
                            f, arm = hit
                            did = d[-16:]
                            if not (f.binary and not did.strip(_HEX)):
                                f = None
                elif unit_id.__class__ is str and d.__class__ is str:
                    # track(flag, unit): the decision this client served the unit within the credit
                    # window, else the arm it buckets into now (what reward_item's _by_unit does, for
                    # a decision-unit flag without targeting; anything else takes the general path).
                    f = self._flags.get(d)
                    if f is not None and f.binary and not f.user_unit and unit_id:
                        now = _monotonic()  # also the memory's stamp below (a fresh float, used once)
                        u = f.units
                        ucur = u.cur
                        e = ucur.get(unit_id)
                        if e is None:
                            e = u.old.get(unit_id)
                        if e is not None and now - e[2] <= f.credit_window:
                            if e[0] is f.version and e[4] is None and e[3] is not None:
                                arm, did = e[1], e[3]
                                if did.__class__ is int:  # remembered by variant(): formatted now
                                    did = "%016x" % did  # noqa: UP031  # did_hex(), inline
                            else:
                                f = None  # another version or a rule: the general path
                        elif not f.detour:
                            arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
                            u.on = True  # from now on this flag's decisions are remembered
                            # unit_did(f"{salt}:{version}", unit), inline: the same id in every process
                            did = "%016x" % _hash64(f.did_prefix + unit_id, signed=False)[0]  # noqa: UP031
                            ucur[unit_id] = (f.version, arm, now, did, None)  # u.put(), inline
                            if len(ucur) * 2 > u.cap:
                                u.old = ucur
                                u.cur = _keyed_dict()
                        else:
                            f = None  # killed or targeted: the general path
                    else:
                        f = None
            if f is not None:
                # A conversion counted in place: once per decision (the memory, inline), then its id
                # appended to its arm's list on the snapshot (no queue, no tuple; see _aggregate).
                ids = f.conversions[arm]  # before the memory: an arm out of range remembers nothing
                mk = did if not f.user_unit else (f.key, arm, did)
                if unit_id is None:
                    now = _monotonic()  # a fresh float: identity tells this call's insert from another's
                mem = self._conversions
                cur = mem.cur
                t = cur.setdefault(mk, now)  # Conversions.first(), inline: two dict operations
                if t is now:  # new to this generation: credited in the one before?
                    before = mem.old.get(mk)
                    if before is not None and before is not now and now - before <= f.credit_window:
                        cur.pop(mk, None)  # a repeat: it stays in the generation before
                        next(self._duplicates)
                        return False
                    if len(cur) >= mem.half:
                        mem.rotate(cur)
                elif now - t <= f.credit_window:  # credited before (or by a racing call just now)
                    next(self._duplicates)  # atomic under the GIL: no lock, exact under threads
                    return False
                else:
                    cur[mk] = now  # its credit window is over: it counts again
                if len(ids) >= self._conv_soon:  # half the cap: one comparison on the common path
                    if self._closed:
                        return True  # a closed client records nothing (as its queue)
                    if len(ids) >= self._conv_cap:
                        self._note_dropped()
                        return False
                    self._request_cut()  # the worker takes the list before it fills
                ids.append(did)
                if _otel._TRACER_PROVIDER is not None or self._tel_forced:
                    self._tel.reward(self._flags, flag_or_decision, 1.0)
                return True
            now = _monotonic()
            res = reward_item(self._flags, flag_or_decision, unit_id, reward, metric, now)
            if res is None:
                return self._reject()
            f, key, did, r, m = res
            if m is None and did is not None and r == 1.0 and f.binary:
                # A conversion of another version or rule: once per decision, its id counted in place.
                mk = did if not f.user_unit else (key[0], key[3], did)
                if not self._conversions.first(mk, f.credit_window, now):
                    next(self._duplicates)
                    return False
                cids = self._conversion_ids.get(key)
                if cids is None:
                    cids = self._conversion_ids.setdefault(key, [])
                if len(cids) < self._conv_soon:
                    cids.append(did)
                elif self._closed:
                    pass  # a closed client records nothing (its cap is 0)
                elif len(cids) < self._conv_cap:
                    cids.append(did)
                    self._request_cut()  # half full: the worker takes it before it fills
                else:
                    self._note_dropped()
                    return False
            else:
                q = self._queue
                if len(q) >= self._max_queue:
                    self._note_dropped()
                    return False
                if m is not None:
                    q.append(("m", (*key, m), r))
                else:
                    q.append(("r", key, did, r, f.binary and r == 1.0))
            if _otel._TRACER_PROVIDER is not None or self._tel_forced:
                self._tel.reward(self._flags, flag_or_decision, r)
            return True
        except Exception:
            return self._reject()

    def _reject(self) -> bool:
        with self._counter_lock:  # the rare path: exact counts under concurrent track() calls
            self._rejected += 1
        if not self._rejected_logged:
            self._rejected_logged = True
            self._logger.debug("banditflags: track() rejected a reward (bad value, unknown flag or unit)")
        return False
