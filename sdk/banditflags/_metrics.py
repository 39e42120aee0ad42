"""SDK metrics through the OpenTelemetry metrics API, with nothing on the hot path.

Every instrument is *observable*: the metric reader's callback reads counters that the event worker
already keeps while it aggregates (``EventProcessor.decision_counts``, ``reward_totals``,
``batches_failed``, ``dropped``) and the client's config age. A decision costs nothing extra.

=============================  ================  =============================================================
instrument                     kind, unit        attributes
=============================  ================  =============================================================
``banditflags.decisions``      counter,          ``feature_flag.key``, ``feature_flag.result.variant``,
                               ``{decision}``    ``feature_flag.result.reason``, ``error.type`` (errors only)
``banditflags.rewards``        counter,          ``feature_flag.key``, ``feature_flag.result.variant``
                               ``{reward}``
``banditflags.reward.sum``     up-down counter   ``feature_flag.key``, ``feature_flag.result.variant``
``banditflags.flush.failures`` counter,          failed ``POST /v1/events`` attempts (each retry counts)
                               ``{request}``
``banditflags.events.dropped`` counter,          events lost (buffer full, reward not attributable)
                               ``{event}``
``banditflags.rewards.dupli-   counter,          conversions not counted again (their decision had converted)
cates``                        ``{reward}``
``banditflags.flags.unknown``  counter,          decisions for a flag key the config does not have (typo?)
                               ``{decision}``
``banditflags.config.age``     gauge, ``s``      seconds since the server last sent or confirmed the config
                                                 (the oldest over the process's clients)
=============================  ================  =============================================================

Exposures (``banditflags.decisions`` with a variant and reason ``split``/``stale``/``cached``) and
rewards are counted when the worker cuts a batch, every ``flush_interval``; other decisions when it
drains the buffer, every 0.1 s. So the metrics lag by that much. All the process's clients that use one
meter provider add up into one set of series; a closed client's counts are kept (counters never go
down), one garbage-collected without ``close()`` drops out.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as _metrics_api
from opentelemetry.metrics import CallbackOptions, Observation

from ._version import __version__

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["register", "retire"]


class _Registry:
    """The instruments of one meter provider and the clients they report."""

    def __init__(self, meter_provider: Any) -> None:
        self.clients: weakref.WeakSet[Runtime] = weakref.WeakSet()
        self.lock = threading.Lock()
        # Totals of closed clients, so that cumulative counters never go down.
        self.retired_decisions: dict[tuple[str, str, str, str], int] = {}
        self.retired_rewards: dict[tuple[str, str], list[float]] = {}
        self.retired_failures = 0
        self.retired_dropped = 0
        self.retired_duplicates = 0
        self.retired_unknown = 0
        meter = _metrics_api.get_meter("banditflags", __version__, meter_provider=meter_provider)
        meter.create_observable_counter(
            "banditflags.decisions",
            [self._decisions],
            unit="{decision}",
            description="Flag decisions by flag, variant and reason",
        )
        meter.create_observable_counter(
            "banditflags.rewards", [self._rewards], unit="{reward}", description="Rewards tracked"
        )
        meter.create_observable_up_down_counter(
            "banditflags.reward.sum", [self._reward_sum], description="Sum of the rewards tracked"
        )
        meter.create_observable_counter(
            "banditflags.flush.failures",
            [self._failures],
            unit="{request}",
            description="Failed POST /v1/events attempts",
        )
        meter.create_observable_counter(
            "banditflags.events.dropped", [self._dropped], unit="{event}", description="Events dropped"
        )
        meter.create_observable_counter(
            "banditflags.rewards.duplicates",
            [self._duplicates],
            unit="{reward}",
            description="Conversions not counted again: their decision had converted already",
        )
        meter.create_observable_counter(
            "banditflags.flags.unknown",
            [self._unknown],
            unit="{decision}",
            description="Decisions for a flag key the configuration does not have",
        )
        meter.create_observable_gauge(
            "banditflags.config.age",
            [self._config_age],
            unit="s",
            description="Seconds since the server last sent or confirmed the config (oldest client)",
        )

    def _live(self) -> list[Runtime]:
        return list(self.clients)

    def _decision_totals(self) -> dict[tuple[str, str, str, str], int]:
        with self.lock:
            totals = dict(self.retired_decisions)
        for c in self._live():
            for k, n in dict(c._events.decision_counts).items():  # dict(): a C-level copy, no race
                totals[k] = totals.get(k, 0) + n
        return totals

    def _reward_totals(self) -> dict[tuple[str, str], list[float]]:
        with self.lock:
            totals = {k: list(v) for k, v in self.retired_rewards.items()}
        for c in self._live():
            for k, (n, s) in dict(c._events.reward_totals).items():
                t = totals.setdefault(k, [0, 0.0])
                t[0] += n
                t[1] += s
        return totals

    def _decisions(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for (flag, variant, reason, error_type), n in self._decision_totals().items():
            attrs = {"feature_flag.key": flag, "feature_flag.result.reason": reason}
            if variant:
                attrs["feature_flag.result.variant"] = variant
            if error_type:
                attrs["error.type"] = error_type
            out.append(Observation(n, attrs))
        return out

    def _rewards(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(int(n), {"feature_flag.key": f, "feature_flag.result.variant": v})
            for (f, v), (n, _) in self._reward_totals().items()
        ]

    def _reward_sum(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(s, {"feature_flag.key": f, "feature_flag.result.variant": v})
            for (f, v), (_, s) in self._reward_totals().items()
        ]

    def _failures(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.retired_failures + sum(c._events.batches_failed for c in self._live()))]

    def _dropped(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.retired_dropped + sum(c._events.dropped for c in self._live()))]

    def _duplicates(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.retired_duplicates + sum(c.stats().duplicates for c in self._live()))]

    def _unknown(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.retired_unknown + sum(c._events.unknown_flags for c in self._live()))]

    def _config_age(self, options: CallbackOptions) -> Iterable[Observation]:
        ages = [a for c in self._live() if (a := c.stats().config_age_seconds) is not None]
        return [Observation(max(ages))] if ages else []

    def retire(self, client: Runtime) -> None:
        if client not in self.clients:
            return
        ev = client._events
        with self.lock:
            for dk, n in dict(ev.decision_counts).items():
                self.retired_decisions[dk] = self.retired_decisions.get(dk, 0) + n
            for rk, (rn, rs) in dict(ev.reward_totals).items():
                t = self.retired_rewards.setdefault(rk, [0, 0.0])
                t[0] += rn
                t[1] += rs
            self.retired_failures += ev.batches_failed
            self.retired_dropped += ev.dropped
            self.retired_duplicates += client.stats().duplicates
            self.retired_unknown += ev.unknown_flags
            self.clients.discard(client)


_lock = threading.Lock()
_global: _Registry | None = None
_by_provider: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()
_of_client: weakref.WeakKeyDictionary[Runtime, _Registry] = weakref.WeakKeyDictionary()


def register(client: Runtime, meter_provider: Any = None) -> None:
    """Report ``client`` through ``meter_provider`` (the global one when None). Never raises."""
    global _global
    try:
        with _lock:
            if meter_provider is None:
                if _global is None:
                    _global = _Registry(None)
                reg = _global
            else:
                found = _by_provider.get(meter_provider)
                if found is None:
                    found = _by_provider[meter_provider] = _Registry(meter_provider)
                reg = found
            reg.clients.add(client)
            _of_client[client] = reg
    except Exception:
        client._logger.debug("banditflags: metrics registration failed", exc_info=True)


def retire(client: Runtime) -> None:
    """On ``close()``: fold the client's counts into its registry's totals. Never raises."""
    try:
        reg = _of_client.get(client)
        if reg is not None:
            reg.retire(client)
    except Exception:
        pass
