"""The server's Prometheus metrics, through prometheus-client: ``GET /metrics`` serves :func:`render`.

Counters and histograms are prometheus-client instruments in this module's own :data:`REGISTRY` (not
the library's global default one, so another library's metrics or a second app in the process cannot
clash with them); like the default registry's, they are process-wide and start at zero when the process
starts, as Prometheus expects. The per-flag gauges are read from the database at scrape time by a custom
collector (:class:`FlagGauges`). With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes),
the instruments live in memory-mapped files and each scrape adds up every worker's (docs/telemetry.md).

=================================================  =========  ===============================================
metric                                             type       meaning
=================================================  =========  ===============================================
``banditflags_exposures_total{flag,variant}``      counter    exposures ingested by this process
``banditflags_rewards_total{flag,variant}``        counter    rewards ingested by this process
``banditflags_reward_sum{flag,variant}``           gauge      sum of those rewards (may be negative)
``banditflags_event_batches_total{result}``        counter    batches: ``accepted`` or ``duplicate``
``banditflags_duplicate_conversions_total{flag}``  counter    conversions not counted: decision id credited
``banditflags_clamped_rewards{flag}``              gauge      binary rewards above exposures, left out
``banditflags_sdk_dropped_events_total``           counter    events the SDKs report they had to drop
``banditflags_ingest_duration_seconds``            histogram  ``POST /v1/events``: read, validate, commit
``banditflags_ingest_group_batches``               histogram  event batches written per commit (group commit)
``banditflags_ingest_commit_seconds``              histogram  one group's transaction, commit included
``banditflags_sdk_config_age_seconds``             histogram  config age the SDKs report with each batch
``banditflags_sdk_config_revisions_behind``        histogram  current revision minus the SDK's, per batch
``banditflags_recompute_duration_seconds``         histogram  recompute cycles that recomputed >= 1 flag
``banditflags_recomputed_flags_total{result}``     counter    ``written`` or ``skipped`` (changed meanwhile)
``banditflags_auth_failures_total``                counter    unknown keys presented (API, console, metrics)
``banditflags_auth_throttled_total``               counter    requests refused with 429 (unknown keys)
``banditflags_recompute_leader``                   gauge      1 while this process holds the recompute lease
``banditflags_recompute_lease_changes_total``      counter    times this process took or lost the lease
``banditflags_weight{flag,variant}``               gauge      served weight (share of the table) now
``banditflags_bandit_weight{flag,variant}``        gauge      the policy's weight before the throttle
``banditflags_allocation_version{flag}``           gauge      current allocation version
``banditflags_flag_exploration{flag}``             gauge      exploration throttle
``banditflags_flag_state{flag,state}``             gauge      1 for the flag's state
``banditflags_config_revision``                    gauge      the config revision the server serves
``banditflags_scrape_timestamp_seconds``           gauge      when the page was made (Unix time)
=================================================  =========  ===============================================

An acknowledged batch, counted under its variant names, and how a scrape shows it (plain text unless
the scraper asks for OpenMetrics; values are floats, as prometheus-client writes them)::

    >>> from banditflags_server.records import EventBatch, EventRow, IngestResult
    >>> def exposures(variant):
    ...     return REGISTRY.get_sample_value(
    ...         "banditflags_exposures_total", {"flag": "doc", "variant": variant}) or 0.0
    >>> before = exposures("green")
    >>> batch = EventBatch("doc-batch", [EventRow("exposures[0]", "doc", 1, 1, 5)], [])
    >>> record_ingest(batch, IngestResult("doc-batch", False), (None, None), {"doc": ["blue", "green"]},
    ...               None, 0.002)
    >>> exposures("green") - before
    5.0
    >>> body, content_type = render(None)
    >>> content_type
    'text/plain; version=0.0.4; charset=utf-8'
    >>> lines = body.decode().splitlines()
    >>> [line for line in lines if line.startswith("# TYPE banditflags_exposures")]
    ['# TYPE banditflags_exposures_total counter']
    >>> [line.split(" ")[0] for line in lines if 'flag="doc"' in line]
    ['banditflags_exposures_total{flag="doc",variant="green"}']
    >>> render(None, "application/openmetrics-text; version=1.0.0")[1]
    'application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores'
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from banditflags_server.records import EventBatch, Flag, IngestResult
from banditflags_server.storage.store import Store

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGE_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
BEHIND_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 100.0)
RECOMPUTE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Label sets per (flag, variant) family, at most: memory stays bounded however many flags and variants
# the batches name. prometheus-client has no limit of its own and keeps a child object with its own lock
# per label set, so _Children below is the only way to .labels() and refuses new label sets beyond this.
# Measured (tracemalloc, a flag key of its own for every pair): 2.6 kB per (flag, variant) over the three
# families, 53 MB at 20,000; the hand-written registry took 0.6 kB, 62 MB at its 100,000. 20,000 is still
# 6,600 three-variant flags; a Prometheus family much larger than that is a problem of its own.
MAX_SERIES = 20_000
# Set by prometheus-client when it is imported: PROMETHEUS_MULTIPROC_DIR makes every instrument write to
# a memory-mapped file of this process in that directory, and a scrape must merge all the files.
MULTIPROCESS: bool = values.ValueClass is not values.MutexValue

REGISTRY = CollectorRegistry()
EXPOSURES = Counter(
    "banditflags_exposures_total",
    "Exposures ingested by this process.",
    ("flag", "variant"),
    registry=REGISTRY,
)
REWARDS = Counter(
    "banditflags_rewards_total", "Rewards ingested by this process.", ("flag", "variant"), registry=REGISTRY
)
REWARD_SUM = Gauge(  # a gauge: rewards may be negative; with several workers their sums add up
    "banditflags_reward_sum",
    "Sum of the rewards ingested by this process.",
    ("flag", "variant"),
    registry=REGISTRY,
    multiprocess_mode="sum",
)
BATCHES = Counter(
    "banditflags_event_batches_total", "Event batches received, by result.", ("result",), registry=REGISTRY
)
DUPLICATE_CONVERSIONS = Counter(
    "banditflags_duplicate_conversions_total",
    "Conversions not counted because their decision id was credited already (a repeated track).",
    ("flag",),
    registry=REGISTRY,
)
# Set by the recompute: a binary flag's rewards beyond its exposures, per version and arm, cannot be
# conversions of distinct decisions (repeats without decision ids): left out of the estimates.
CLAMPED = Gauge(
    "banditflags_clamped_rewards",
    "Binary rewards above the exposures of their version and arm, left out at the flag's last recompute.",
    ("flag",),
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
SDK_DROPPED = Counter(
    "banditflags_sdk_dropped_events_total", "Events the SDKs report they dropped.", registry=REGISTRY
)
INGEST = Histogram(
    "banditflags_ingest_duration_seconds",
    "POST /v1/events: read, validate, commit.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
GROUP_BATCHES = Histogram(
    "banditflags_ingest_group_batches",
    "Event batches written per commit (group commit).",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
GROUP_SECONDS = Histogram(
    "banditflags_ingest_commit_seconds",
    "Seconds one group of event batches took to count and commit.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
SDK_CONFIG_AGE = Histogram(
    "banditflags_sdk_config_age_seconds",
    "Seconds since the SDK last had its config confirmed, as reported with each batch.",
    registry=REGISTRY,
    buckets=AGE_BUCKETS,
)
SDK_BEHIND = Histogram(
    "banditflags_sdk_config_revisions_behind",
    "The server's config revision minus the one the SDK reports, per batch.",
    registry=REGISTRY,
    buckets=BEHIND_BUCKETS,
)
RECOMPUTE = Histogram(
    "banditflags_recompute_duration_seconds",
    "Duration of recompute cycles that recomputed at least one flag.",
    registry=REGISTRY,
    buckets=RECOMPUTE_BUCKETS,
)
RECOMPUTED = Counter(
    "banditflags_recomputed_flags_total", "Flags recomputed, by result.", ("result",), registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "banditflags_auth_failures_total",
    "Unknown keys presented to the API, the console's login or /metrics.",
    registry=REGISTRY,
)
AUTH_THROTTLED = Counter(
    "banditflags_auth_throttled_total",
    "Requests refused with 429: their address presented too many unknown keys.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "banditflags_recompute_leader",
    "1 while this process holds the recompute lease (only the holder recomputes).",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
LEASE_CHANGES = Counter(
    "banditflags_recompute_lease_changes_total",
    "Times this process took or lost the recompute lease.",
    registry=REGISTRY,
)
# The few fixed label values, made once (so they show as 0 from the start, as Prometheus recommends).
_ACCEPTED, _DUPLICATE = BATCHES.labels("accepted"), BATCHES.labels("duplicate")
_WRITTEN, _SKIPPED = RECOMPUTED.labels("written"), RECOMPUTED.labels("skipped")


class _Children:
    """The ``inc`` methods of the children of labelled instruments, by label values, made on first use for
    at most :data:`MAX_SERIES` label sets; instruments that always move together share an entry. Read
    ``by_labels`` first (one dict lookup on the ingest path), then call :meth:`add` for a new label set."""

    def __init__(self, *families: Counter | Gauge) -> None:
        self.families = families
        self.by_labels: dict[tuple[str, ...], tuple[Callable[[float], None], ...]] = {}
        self._lock = threading.Lock()

    def add(self, labels: tuple[str, ...]) -> tuple[Callable[[float], None], ...] | None:
        """The entry for ``labels``, made now unless the cap is reached (then None: not counted)."""
        with self._lock:
            incs = self.by_labels.get(labels)
            if incs is None and len(self.by_labels) < MAX_SERIES:
                incs = tuple(f.labels(*labels).inc for f in self.families)
                self.by_labels[labels] = incs
            return incs


_EXPOSURE_CHILDREN = _Children(EXPOSURES)
_REWARD_CHILDREN = _Children(REWARDS, REWARD_SUM)
_DUPLICATE_CHILDREN = _Children(DUPLICATE_CONVERSIONS)
_CLAMPED_FLAGS: dict[str, Callable[[float], None]] = {}  # flag -> its gauge's set, once it had a clamp


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
            _DUPLICATE.inc()
            return
        _ACCEPTED.inc()
        if batch.dropped:
            SDK_DROPPED.inc(batch.dropped)
        ignored = {i.get("field") for i in result.ignored} if result.ignored else ()
        removed = result.removed  # conversions taken out of a row as repeats: not ingested
        for flag, n in result.duplicate_flags.items():
            incs = _DUPLICATE_CHILDREN.by_labels.get((flag,)) or _DUPLICATE_CHILDREN.add((flag,))
            if incs is not None:
                incs[0](n)
        # A plain dict lookup per row, the children's bound inc methods: the ingest rate is a measured budget
        # (bench/bench_metrics.py).
        exposures, rewards = _EXPOSURE_CHILDREN.by_labels, _REWARD_CHILDREN.by_labels
        for row in (*batch.exposures, *batch.rewards):
            # Guardrail-metric rows (latency, errors) are not the objective: their sums are other units.
            if row.where in ignored or row.metric is not None:
                continue
            names = variants.get(row.flag)
            key = (row.flag, names[row.arm] if names is not None and row.arm < len(names) else str(row.arm))
            if row.is_reward:
                incs = rewards.get(key) or _REWARD_CHILDREN.add(key)
                repeats = removed.get(row.where, 0) if removed else 0
                if incs is not None:
                    incs[0](row.count - repeats)
                    incs[1](row.sum - repeats)
            else:
                incs = exposures.get(key) or _EXPOSURE_CHILDREN.add(key)
                if incs is not None:
                    incs[0](row.count)
        sdk_revision, age = report
        if age is not None and math.isfinite(age):  # a NaN would make the histogram's sum NaN for good
            SDK_CONFIG_AGE.observe(age)
        if sdk_revision is not None and revision is not None:
            SDK_BEHIND.observe(max(0, revision - sdk_revision))
    except Exception:  # metrics must never fail an acknowledged batch
        pass


def record_clamped(flag: str, rewards: float) -> None:
    """Set the clamped-rewards gauge of ``flag`` (at a recompute); a series is made only for a flag that
    had some, so flags that never had any add none. Never raises."""
    try:
        set_value = _CLAMPED_FLAGS.get(flag)
        if set_value is None:
            if rewards <= 0 or len(_CLAMPED_FLAGS) >= MAX_SERIES:
                return
            set_value = _CLAMPED_FLAGS.setdefault(flag, CLAMPED.labels(flag).set)
        set_value(rewards)
    except Exception:
        pass


class VariantNames:
    """Flag key -> variant keys, for metric labels. Variants are fixed once a flag exists, so the map is
    reloaded only when a batch names a flag it does not know (at most once a second)."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self._loaded_at = -math.inf
        self._lock = threading.Lock()

    def stale(self, keys: Iterable[str]) -> bool:
        """True when some key is unknown and a reload is allowed now (then call :meth:`reload`).

        Answering True takes the second's one reload: the other batches naming an unknown flag (an SDK
        still reporting a deleted flag, 128 connections at once) do not each wait for a reload of their
        own (that herd held ingest's p99 above a second).
        """
        now = time.monotonic()
        if now - self._loaded_at < 1.0 or all(k in self.names for k in keys):
            return False
        self._loaded_at = now
        return True

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


def record_group(batches: int, seconds: float) -> None:
    """One group commit of event batches (called by the writer thread). Never raises."""
    try:
        GROUP_BATCHES.observe(batches)
        GROUP_SECONDS.observe(seconds)
    except Exception:
        pass


def record_leadership(was: bool, now: bool) -> None:
    """Whether this process holds the recompute lease after a tick. Never raises."""
    try:
        LEADER.set(1.0 if now else 0.0)
        if was != now:
            LEASE_CHANGES.inc()
    except Exception:
        pass


def record_recompute(results: Sequence[Any], seconds: float) -> None:
    """Count one recompute cycle (``RecomputeResult`` list). Never raises."""
    try:
        if not results:
            return
        RECOMPUTE.observe(seconds)
        written = sum(1 for r in results if r.written)
        _WRITTEN.inc(written)
        _SKIPPED.inc(len(results) - written)
    except Exception:
        pass


class FlagGauges:
    """A collector of the gauges read from the database at scrape time: per flag (and variant) from one
    :meth:`Store.config_snapshot`, and the config revision; then the scrape's time. Every process reads
    the same database, so in multiprocess mode any worker's answer is the whole truth for these."""

    def __init__(self, store: Store | None) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        if self.store is not None:
            revision, flags = self.store.config_snapshot()
            yield from flag_gauges(flags)
            yield GaugeMetricFamily(
                "banditflags_config_revision", "The config revision the server serves.", value=revision
            )
        yield GaugeMetricFamily(
            "banditflags_scrape_timestamp_seconds", "When this page was made.", value=round(time.time(), 3)
        )


def flag_gauges(flags: Iterable[Flag]) -> list[Metric]:
    """The per-flag gauge families of these flags."""
    fv = ("flag", "variant")
    weight = GaugeMetricFamily(
        "banditflags_weight", "Served weight (share of the table) per variant.", labels=fv
    )
    bandit = GaugeMetricFamily(
        "banditflags_bandit_weight", "The policy's weight before the throttle.", labels=fv
    )
    version = GaugeMetricFamily(
        "banditflags_allocation_version", "Current allocation version.", labels=("flag",)
    )
    exploration = GaugeMetricFamily(
        "banditflags_flag_exploration", "Exploration throttle in [0, 1].", labels=("flag",)
    )
    state = GaugeMetricFamily(
        "banditflags_flag_state", "1 for the flag's current state.", labels=("flag", "state")
    )
    for f in flags:
        names = [v["key"] for v in f.variants]
        if f.allocation is not None:
            for name, w in zip(names, f.allocation.weights, strict=False):
                weight.add_metric((f.key, name), w)
        for name, w in zip(names, f.bandit_weights, strict=False):
            bandit.add_metric((f.key, name), w)
        version.add_metric((f.key,), f.version)
        exploration.add_metric((f.key,), f.exploration)
        state.add_metric((f.key, f.state), 1)
    return [weight, bandit, version, exploration, state]


class _Instruments:
    """A collector of this module's instruments, or in multiprocess mode of every worker's files, without
    the ``_created`` samples prometheus-client adds to counters and histograms: the page keeps the series
    it always had (in the text format each would be one more gauge series per label set)."""

    def collect(self) -> Iterator[Metric]:
        source = MultiProcessCollector(None) if MULTIPROCESS else REGISTRY  # type: ignore[no-untyped-call]
        for metric in source.collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


_INSTRUMENTS = _Instruments()


def scrape_registry(store: Store | None) -> CollectorRegistry:
    """What one scrape collects: the instruments, then the gauges read from ``store`` (none without)."""
    registry = CollectorRegistry()
    registry.register(_INSTRUMENTS)
    registry.register(FlagGauges(store))
    return registry


def render(store: Store | None, accept: str = "") -> tuple[bytes, str]:
    """The exposition and its content type, in the format the ``Accept`` header asks for: OpenMetrics 1.0
    if it names ``application/openmetrics-text``, else the Prometheus text format (0.0.4; or 1.0.0 when
    asked for by version)."""
    encode, content_type = choose_encoder(accept)
    return encode(scrape_registry(store)), content_type
