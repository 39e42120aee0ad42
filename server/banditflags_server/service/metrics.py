"""``GET /metrics``: Prometheus text exposition (format 0.0.4), no key needed.

A small, dependency-free registry: counters and histograms updated by the handlers and the recompute
loop (process-wide, like prometheus-client's default registry; they start at zero when the process
starts, as Prometheus expects), and gauges read from the database at scrape time.

=================================================  =========  ===============================================
metric                                             type       meaning
=================================================  =========  ===============================================
``banditflags_exposures_total{flag,variant}``      counter    exposures ingested by this process
``banditflags_rewards_total{flag,variant}``        counter    rewards ingested by this process
``banditflags_reward_sum{flag,variant}``           gauge      sum of those rewards (may be negative)
``banditflags_event_batches_total{result}``        counter    batches: ``accepted`` or ``duplicate``
``banditflags_sdk_dropped_events_total``           counter    events the SDKs report they had to drop
``banditflags_ingest_duration_seconds``            histogram  ``POST /v1/events``: read, validate, commit
``banditflags_sdk_config_age_seconds``             histogram  config age the SDKs report with each batch
``banditflags_sdk_config_revisions_behind``        histogram  current revision minus the SDK's, per batch
``banditflags_recompute_duration_seconds``         histogram  recompute cycles that recomputed >= 1 flag
``banditflags_recomputed_flags_total{result}``     counter    ``written`` or ``skipped`` (changed meanwhile)
``banditflags_weight{flag,variant}``               gauge      served weight (share of the table) now
``banditflags_bandit_weight{flag,variant}``        gauge      the policy's weight before the throttle
``banditflags_allocation_version{flag}``           gauge      current allocation version
``banditflags_flag_exploration{flag}``             gauge      exploration throttle
``banditflags_flag_state{flag,state}``             gauge      1 for the flag's state
``banditflags_config_revision``                    gauge      the config revision the server serves
=================================================  =========  ===============================================

>>> h = Histogram("demo_seconds", "Demo.", (0.1, 1.0))
>>> h.observe(0.5)
>>> print("\\n".join(h.render()))
# HELP demo_seconds Demo.
# TYPE demo_seconds histogram
demo_seconds_bucket{le="0.1"} 0
demo_seconds_bucket{le="1.0"} 1
demo_seconds_bucket{le="+Inf"} 1
demo_seconds_sum 0.5
demo_seconds_count 1
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from banditflags_server.errors import ApiError
from banditflags_server.records import EventBatch, Flag, IngestResult
from banditflags_server.storage.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGE_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
BEHIND_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 100.0)
MAX_SERIES = 100_000  # per family: bounded memory even with 10,000 flags x 100 variants


def escape(value: str) -> str:
    """A label value as the text format wants it.

    >>> escape('a"b\\\\c\\nd')
    'a\\\\"b\\\\\\\\c\\\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def fmt(v: float) -> str:
    """A sample value: integers without a decimal point, ``+Inf``/``-Inf``/``NaN`` spelled out."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _header(name: str, help_text: str, kind: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


class Counter:
    """A monotonically increasing value per label set (``kind="gauge"`` for sums that may go down)."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (), kind: str = "counter") -> None:
        self.name, self.help, self.labelnames, self.kind = name, help_text, tuple(labels), kind
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        key = tuple(labels)
        with self._lock:
            if key in self._values or len(self._values) < MAX_SERIES:
                self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: Sequence[str] = ()) -> float:
        return self._values.get(tuple(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        out = _header(self.name, self.help, self.kind)
        out.extend(f"{self.name}{_labels(self.labelnames, k)} {fmt(v)}" for k, v in items)
        return out


class Histogram:
    """Cumulative buckets, sum and count (no labels: what we time is one thing each)."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        i = bisect.bisect_left(self.bounds, value)  # le: a value equal to a bound falls in it
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        out = _header(self.name, self.help, "histogram")
        acc = 0
        for bound, c in zip(self.bounds, counts, strict=False):
            acc += c
            out.append(f'{self.name}_bucket{{le="{float(bound)}"}} {acc}')
        acc += counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {acc}')
        out.append(f"{self.name}_sum {fmt(total)}")
        out.append(f"{self.name}_count {acc}")
        return out


EXPOSURES = Counter("banditflags_exposures_total", "Exposures ingested by this process.", ("flag", "variant"))
REWARDS = Counter("banditflags_rewards_total", "Rewards ingested by this process.", ("flag", "variant"))
REWARD_SUM = Counter(
    "banditflags_reward_sum", "Sum of the rewards ingested by this process.", ("flag", "variant"), "gauge"
)
BATCHES = Counter("banditflags_event_batches_total", "Event batches received, by result.", ("result",))
SDK_DROPPED = Counter("banditflags_sdk_dropped_events_total", "Events the SDKs report they dropped.")
INGEST = Histogram(
    "banditflags_ingest_duration_seconds", "POST /v1/events: read, validate, commit.", LATENCY_BUCKETS
)
SDK_CONFIG_AGE = Histogram(
    "banditflags_sdk_config_age_seconds",
    "Seconds since the SDK last had its config confirmed, as reported with each batch.",
    AGE_BUCKETS,
)
SDK_BEHIND = Histogram(
    "banditflags_sdk_config_revisions_behind",
    "The server's config revision minus the one the SDK reports, per batch.",
    BEHIND_BUCKETS,
)
RECOMPUTE = Histogram(
    "banditflags_recompute_duration_seconds",
    "Duration of recompute cycles that recomputed at least one flag.",
    (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
RECOMPUTED = Counter("banditflags_recomputed_flags_total", "Flags recomputed, by result.", ("result",))
_PROCESS = (EXPOSURES, REWARDS, REWARD_SUM, BATCHES, SDK_DROPPED, RECOMPUTED)
_HISTOGRAMS = (INGEST, SDK_CONFIG_AGE, SDK_BEHIND, RECOMPUTE)


def sdk_report(body: object) -> tuple[int | None, float | None]:
    """The optional ``config_revision`` and ``config_age`` of an events batch; 422 naming a bad one."""
    if not isinstance(body, Mapping):
        return None, None
    revision = body.get("config_revision")
    if revision is not None and (type(revision) is not int or revision < 0):
        raise ApiError(422, "config_revision: must be an integer >= 0", field="config_revision")
    age = body.get("config_age")
    if age is not None and (type(age) not in (int, float) or not math.isfinite(age) or age < 0):
        raise ApiError(422, "config_age: must be a number of seconds >= 0", field="config_age")
    return revision, None if age is None else float(age)


def record_ingest(
    batch: EventBatch,
    result: IngestResult,
    report: tuple[int | None, float | None],
    variants: Mapping[str, list[str]],
    revision: int | None,
    seconds: float,
) -> None:
    """Count one acknowledged batch (duplicates count only as such). Never raises."""
    try:
        INGEST.observe(seconds)
        if result.duplicate:
            BATCHES.inc(labels=("duplicate",))
            return
        BATCHES.inc(labels=("accepted",))
        if batch.dropped:
            SDK_DROPPED.inc(batch.dropped)
        ignored = {i.get("field") for i in result.ignored}
        for row in (*batch.exposures, *batch.rewards):
            if row.where in ignored:
                continue
            names = variants.get(row.flag)
            variant = names[row.arm] if names is not None and row.arm < len(names) else str(row.arm)
            if row.is_reward:
                REWARDS.inc(row.count, (row.flag, variant))
                REWARD_SUM.inc(row.sum, (row.flag, variant))
            else:
                EXPOSURES.inc(row.count, (row.flag, variant))
        sdk_revision, age = report
        if age is not None:
            SDK_CONFIG_AGE.observe(age)
        if sdk_revision is not None and revision is not None:
            SDK_BEHIND.observe(max(0, revision - sdk_revision))
    except Exception:  # metrics must never fail an acknowledged batch
        pass


class VariantNames:
    """Flag key -> variant keys, for metric labels. Variants are fixed once a flag exists, so the map is
    reloaded only when a batch names a flag it does not know (at most once a second)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self._loaded_at = -math.inf
        self._lock = threading.Lock()

    def stale(self, keys: Iterable[str]) -> bool:
        """True when some key is unknown and a reload is allowed now (then call :meth:`reload`)."""
        return time.monotonic() - self._loaded_at >= 1.0 and any(k not in self.names for k in keys)

    def reload(self, store: Store) -> None:
        """Never raises: the batch is already acknowledged when this runs."""
        with self._lock:
            self._loaded_at = time.monotonic()
            try:
                _, flags = store.config_snapshot()
            except Exception:
                return
            self.names = {f.key: [v["key"] for v in f.variants] for f in flags}


VARIANT_NAMES = VariantNames()


def record_recompute(results: Sequence[Any], seconds: float) -> None:
    """Count one recompute cycle (``RecomputeResult`` list). Never raises."""
    try:
        if not results:
            return
        RECOMPUTE.observe(seconds)
        written = sum(1 for r in results if r.written)
        RECOMPUTED.inc(written, ("written",))
        RECOMPUTED.inc(len(results) - written, ("skipped",))
    except Exception:
        pass


def _flag_gauges(revision: int, flags: Iterable[Flag]) -> Iterator[str]:
    weight: list[str] = _header(
        "banditflags_weight", "Served weight (share of the table) per variant.", "gauge"
    )
    bandit: list[str] = _header(
        "banditflags_bandit_weight", "The policy's weight before the throttle.", "gauge"
    )
    version = _header("banditflags_allocation_version", "Current allocation version.", "gauge")
    exploration = _header("banditflags_flag_exploration", "Exploration throttle in [0, 1].", "gauge")
    state = _header("banditflags_flag_state", "1 for the flag's current state.", "gauge")
    for f in flags:
        key = escape(f.key)
        names = [v["key"] for v in f.variants]
        if f.allocation is not None:
            for name, w in zip(names, f.allocation.weights, strict=False):
                weight.append(f'banditflags_weight{{flag="{key}",variant="{escape(name)}"}} {fmt(w)}')
        for name, w in zip(names, f.bandit_weights, strict=False):
            bandit.append(f'banditflags_bandit_weight{{flag="{key}",variant="{escape(name)}"}} {fmt(w)}')
        version.append(f'banditflags_allocation_version{{flag="{key}"}} {f.version}')
        exploration.append(f'banditflags_flag_exploration{{flag="{key}"}} {fmt(f.exploration)}')
        state.append(f'banditflags_flag_state{{flag="{key}",state="{escape(f.state)}"}} 1')
    yield from weight
    yield from bandit
    yield from version
    yield from exploration
    yield from state
    yield from _header("banditflags_config_revision", "The config revision the server serves.", "gauge")
    yield f"banditflags_config_revision {revision}"


def render(store: Store | None) -> str:
    """The whole exposition: process counters and histograms, then gauges read from the database."""
    lines: list[str] = []
    for c in _PROCESS:
        lines.extend(c.render())
    for h in _HISTOGRAMS:
        lines.extend(h.render())
    if store is not None:
        revision, flags = store.config_snapshot()
        lines.extend(_flag_gauges(revision, flags))
    lines += _header("banditflags_scrape_timestamp_seconds", "When this page was made.", "gauge")
    lines.append(f"banditflags_scrape_timestamp_seconds {fmt(round(time.time(), 3))}")
    return "\n".join(lines) + "\n"
