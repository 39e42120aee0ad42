"""An OpenFeature provider backed by :class:`banditflags.Client` (``pip install 'banditflags[openfeature]'``).

Resolution is the client's local decision (no I/O): the targeting key is the unit id, the context's
other attributes are the decision's ``attributes`` (targeting rules, DESIGN.md §9: evaluated here, never
sent anywhere), the variant is the arm's key, the value its JSON value, ``flag_metadata`` carries the
allocation ``version``, the arm's ``propensity``, the decision ``token`` and, when a targeting rule or
an individual target served the unit, its ``rule`` (primitives only). Reasons are OpenFeature's
upper-case ones: ``SPLIT``, ``DISABLED`` (killed flag: the control arm), ``CACHED`` (bootstrap config),
``STALE``, ``ERROR`` with ``FLAG_NOT_FOUND``, ``PROVIDER_NOT_READY``, ``TARGETING_KEY_MISSING``,
``TYPE_MISMATCH`` (JSON types are checked: ``true`` is not an integer), ``PARSE_ERROR`` or ``GENERAL``.
A type mismatch is found before bucketing, so it records no exposure.

``track(event_name, context, details)`` credits a reward (``details.value``, default 1.0) to the arm the
targeting key was served: for the flags named by ``details.attributes["token"]`` (a decision token,
or a list of them), else ``attributes["flag"]``/``["flags"]``, else the flags mapped to
``event_name`` by ``track_events=``, else the flag whose key is ``event_name``.

Events: ``PROVIDER_READY`` when the first configuration arrives after a timed-out ``initialize`` (and
when the server answers again after ``PROVIDER_STALE``), ``PROVIDER_CONFIGURATION_CHANGED`` with the
changed flag keys on every new revision, ``PROVIDER_STALE`` when fetching fails and the configuration is
older than the client's ``stale_after``.

``initialize`` never waits longer than ``init_timeout`` (default 2 s): it returns as soon as the
client can evaluate (at once with a bootstrap config); otherwise it raises ``ProviderNotReadyError``
(status ``ERROR``) and the provider emits ``PROVIDER_READY`` when the configuration arrives.
``api.set_provider`` runs it on the SDK's own thread; ``set_provider_and_wait`` waits for it.

>>> import httpx
>>> from openfeature import api
>>> from openfeature.evaluation_context import EvaluationContext
>>> config = {"schema": 1, "revision": 1, "flags": [{
...     "key": "checkout-button", "salt": "3f0c", "state": "running", "exploration": 1.0,
...     "version": 1, "variants": [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}],
...     "control": "blue", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
...     "objective": {"reward": "binary", "unit": "decision"}}]}
>>> def server(request):
...     if request.url.path == "/v1/config":
...         return httpx.Response(200, json=config, headers={"ETag": '"1"'})
...     return httpx.Response(202, json={})
>>> provider = BanditflagsProvider(base_url="http://bf", sdk_key="bf_sdk_x",
...                                transport=httpx.MockTransport(server))
>>> api.set_provider_and_wait(provider, "doctest")
>>> client = api.get_client("doctest")
>>> d = client.get_string_details("checkout-button", "#000", EvaluationContext("user-42"))
>>> d.value in ("#00f", "#0f0"), d.variant in ("blue", "green"), d.reason == "SPLIT"
(True, True, True)
>>> d.flag_metadata["version"], d.flag_metadata["token"].startswith("bf2:checkout-button:1:")
(1, True)
>>> client.get_integer_details("checkout-button", 0, EvaluationContext("user-42")).error_code
<ErrorCode.TYPE_MISMATCH: 'TYPE_MISMATCH'>
>>> client.track("checkout-button", EvaluationContext("user-42"))
>>> api.shutdown()
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from ._client import Client
from ._models import Decision, ErrorType, Reason
from ._notify import ConfigEvent

__all__ = ["PROVIDER_NAME", "BanditflagsProvider"]

PROVIDER_NAME = "banditflags"

T = TypeVar("T")

_REASONS: dict[Reason, str] = {
    Reason.SPLIT: OFReason.SPLIT,
    Reason.DISABLED: OFReason.DISABLED,
    Reason.DEFAULT: OFReason.DEFAULT,
    Reason.STALE: OFReason.STALE,
    Reason.CACHED: OFReason.CACHED,
    Reason.ERROR: OFReason.ERROR,
}
_ERROR = Reason.ERROR  # a module constant: reading it off the Enum class costs ~70 ns a resolution
_ERRORS: dict[ErrorType, ErrorCode] = {
    ErrorType.FLAG_NOT_FOUND: ErrorCode.FLAG_NOT_FOUND,
    ErrorType.PROVIDER_NOT_READY: ErrorCode.PROVIDER_NOT_READY,
    ErrorType.TARGETING_KEY_MISSING: ErrorCode.TARGETING_KEY_MISSING,
    ErrorType.PARSE_ERROR: ErrorCode.PARSE_ERROR,
    ErrorType.GENERAL: ErrorCode.GENERAL,
}


# JSON type checks per OpenFeature flag type. bool is a subclass of int in Python: exclude it.
def _is_bool(v: object) -> bool:
    return v.__class__ is bool


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: object) -> bool:  # a JSON number: 1 is a valid float flag value (returned as 1.0)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v: object) -> bool:
    return isinstance(v, str)


def _is_object(v: object) -> bool:
    return isinstance(v, (Mapping, list, tuple))


class BanditflagsProvider(AbstractProvider):
    """OpenFeature provider for banditflags.

    Give it a client (``BanditflagsProvider(client)``: you own it and close it) or the client's
    settings (``BanditflagsProvider(base_url=..., sdk_key=..., **client_options)``: the provider owns
    the client and closes it in ``shutdown``). ``init_timeout`` bounds ``initialize``;
    ``track_events`` maps tracking event names to the flag keys they reward. See the module
    docstring for an example.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        base_url: str | None = None,
        sdk_key: str | None = None,
        init_timeout: float = 2.0,
        track_events: Mapping[str, str | Sequence[str]] | None = None,
        shutdown_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        super().__init__()
        if client is None:
            if not base_url or not sdk_key:
                raise TypeError("BanditflagsProvider needs a Client, or base_url= and sdk_key=")
            client = Client(base_url, sdk_key, **client_options)
            self._owns_client = True
        else:
            if base_url is not None or sdk_key is not None or client_options:
                raise TypeError("give either a Client or the settings to build one, not both")
            self._owns_client = False
        if not init_timeout >= 0:
            raise ValueError("init_timeout must be >= 0")
        self.client = client
        self.init_timeout = float(init_timeout)
        self.shutdown_timeout = float(shutdown_timeout)
        self._track_events: dict[str, tuple[str, ...]] = {
            k: (v,) if isinstance(v, str) else tuple(v) for k, v in (track_events or {}).items()
        }
        self._lock = threading.Lock()
        self._awaiting_ready = False  # initialize() gave up: emit READY when the config arrives
        self._initialized = False
        self._listening = False

    # -- lifecycle ------------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the client and wait at most ``init_timeout`` for a configuration it can serve."""
        if not self._listening:
            self._listening = True
            self.client.add_listener(self._on_config_event)
        self.client.start()
        if self._can_evaluate() or self.client.wait_until_ready(self.init_timeout):
            self._initialized = True
            return
        with self._lock:
            if self._can_evaluate():  # arrived while we were giving up
                self._initialized = True
                return
            self._awaiting_ready = True
        raise ProviderNotReadyError(f"no configuration from the server within {self.init_timeout:g} s")

    def _can_evaluate(self) -> bool:
        return self.client.stats().config_revision is not None  # a server answer or a bootstrap

    def shutdown(self) -> None:
        """Stop listening; close the client if this provider built it (bounded in time)."""
        if self._listening:
            self._listening = False
            self.client.remove_listener(self._on_config_event)
        if self._owns_client:
            self.client.close(timeout=self.shutdown_timeout)

    def _on_config_event(self, event: ConfigEvent) -> None:
        # Runs on the client's sync thread.
        if event.kind == "ready":
            with self._lock:
                emit = self._awaiting_ready or self._initialized
                self._awaiting_ready = False
                self._initialized = True
            if emit:
                self.emit_provider_ready(ProviderEventDetails(metadata={"revision": event.revision or 0}))
        elif event.kind == "changed":
            self._emit_changed(event)
        elif event.kind == "stale":
            self.emit_provider_stale(
                ProviderEventDetails(
                    message="configuration not confirmed by the server within stale_after",
                    metadata={"revision": event.revision or 0},
                )
            )

    def _emit_changed(self, event: ConfigEvent) -> None:
        self.emit_provider_configuration_changed(
            ProviderEventDetails(
                flags_changed=list(event.flags_changed), metadata={"revision": event.revision or 0}
            )
        )

    # -- resolution -----------------------------------------------------------------------------

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        details = self._resolve(flag_key, default_value, evaluation_context, _is_float)
        if details.error_code is None and not isinstance(details.value, float):
            details.value = float(details.value)  # JSON 1 served to a float flag is 1.0
        return details

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, _is_object)

    def _resolve(
        self, flag_key: str, default: T, ctx: EvaluationContext | None, type_ok: Any
    ) -> FlagResolutionDetails[T]:
        client = self.client
        # Check the type on the flag's variants *before* deciding: a mismatch must not count an exposure.
        f = client._flags.get(flag_key)
        if f is not None and not all(type_ok(v) for v in f.values):
            return FlagResolutionDetails(
                value=default,
                reason=OFReason.ERROR,
                error_code=ErrorCode.TYPE_MISMATCH,
                error_message=f"flag {flag_key!r} has values that are not of the requested type",
            )
        unit = ctx.targeting_key if ctx is not None else None
        d = client.decide(flag_key, unit, default, attributes=ctx.attributes if ctx is not None else None)
        if d.reason is _ERROR:
            et = d.error_type
            return FlagResolutionDetails(
                value=default,
                reason=OFReason.ERROR,
                error_code=_ERRORS.get(et, ErrorCode.GENERAL) if et is not None else ErrorCode.GENERAL,
                error_message=d.error_message,
            )
        return FlagResolutionDetails(
            value=d.value,
            reason=_REASONS[d.reason],
            variant=d.variant,
            flag_metadata=_metadata(d),
        )

    # -- tracking -------------------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Credit a reward (``details.value``, default 1.0); see the module docstring for the target."""
        try:
            unit = evaluation_context.targeting_key if evaluation_context is not None else None
            reward: float = 1.0
            attrs: Mapping[str, Any] = {}
            if tracking_event_details is not None:
                if tracking_event_details.value is not None:
                    reward = tracking_event_details.value
                attrs = tracking_event_details.attributes
            if not isinstance(reward, (int, float)) or isinstance(reward, bool) or not math.isfinite(reward):
                self.client.track(tracking_event_name, unit, reward)  # rejected and counted by the client
                return
            tokens = attrs.get("token")
            if tokens is not None:
                for token in _as_strings(tokens):
                    self.client.track(token, unit or None, reward)
                return
            flags = attrs.get("flags", attrs.get("flag"))
            targets = (
                tuple(_as_strings(flags))
                if flags is not None
                else self._track_events.get(tracking_event_name, (tracking_event_name,))
            )
            for flag in targets:
                self.client.track(flag, unit, reward)
        except Exception:  # track() never raises into the application
            return


def _as_strings(x: object) -> Iterable[str]:
    if isinstance(x, str):
        return (x,)
    if isinstance(x, (list, tuple)):
        return [s for s in x if isinstance(s, str)]
    return ()


def _metadata(d: Decision) -> dict[str, bool | int | float | str]:
    md: dict[str, bool | int | float | str] = {}
    if d.version is not None:
        md["version"] = d.version
    if d.propensity is not None:
        md["propensity"] = d.propensity
    token = d.token
    if token is not None:
        md["token"] = token
    if d.rule is not None:
        md["rule"] = d.rule
    return md
