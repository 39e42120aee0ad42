"""Attribute values never leave the process (DESIGN.md §9): not in event batches, spans, span events,
log-based events, metrics or log records. Decisions with distinctive attribute values on every path
(targets, each kind of rule, the default allocation, errors, a Mapping that raises, traced and not),
rewards by Decision, token and unit; then every byte the SDK emitted is searched for them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from banditflags import Client

MakeClient = Callable[..., Client]
SECRET = "Zq7-SECRET"  # in every attribute value below; never an id, key or name


def flag(key: str, state: str = "running") -> dict[str, Any]:
    return {
        "key": key,
        "salt": f"s-{key}",
        "state": state,
        "exploration": 1.0,
        "version": 2,
        "variants": [{"key": "a", "value": 0}, {"key": "b", "value": 1}],
        "control": "a",
        "weights": [0.5, 0.5],
        "table": [[0, 5000], [1, 5000]],
        "objective": {"reward": "continuous", "unit": "user"},
        "targets": [{"variant": "b", "units": ["pinned"]}],
        "rules": [
            {
                "id": "mail",
                "clauses": [{"attribute": "email", "op": "ends_with", "values": ["@corp.test"]}],
                "serve": {"variant": "b"},
            },
            {
                "id": "split",
                "clauses": [{"attribute": "plan", "op": "matches", "values": ["^pro"]}],
                "serve": {"weights": [1, 1]},
            },
            {
                "id": "geo",
                "clauses": [{"attribute": "country", "op": "in", "values": [f"us-{SECRET}"]}],
                "serve": {"bandit": True},
            },
        ],
        "rule_allocations": {"geo": {"version": 3, "weights": [0.9, 0.1], "table": [[0, 9000], [1, 1000]]}},
    }


class Leaky(Mapping[str, Any]):
    """A caller's Mapping whose lookups fail with the secret in the message."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(f"{SECRET} {key}")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError(f"lookup failed for {SECRET}")

    def __iter__(self) -> Iterator[str]:
        return iter(["email"])

    def __len__(self) -> int:
        return 1


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def attribute_sets(i: int) -> list[Any]:
    return [
        {"email": f"{SECRET}{i}@corp.test"},
        {"plan": f"pro-{SECRET}", "email": f"{SECRET}@example.com"},
        {"country": f"us-{SECRET}", "note": [SECRET, i, f"{SECRET}{i}"]},
        {"country": SECRET, "age": i, "email": SECRET},  # no rule matches: the default allocation
        {"email": SECRET.encode(), "plan": [SECRET, {"k": SECRET}]},  # values that are not values
        Leaky(),
        SECRET,  # not a mapping at all
    ]


def test_attribute_values_never_leave_the_process(make_client: MakeClient, server: Any) -> None:
    server.set_config({"schema": 1, "revision": 1, "segments": [], "flags": [flag("p"), flag("k", "killed")]})
    spans, logs, reader = InMemorySpanExporter(), InMemoryLogRecordExporter(), InMemoryMetricReader()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    mp = MeterProvider(metric_readers=[reader])
    capture = Capture()
    root, sdk_logger = logging.getLogger(), logging.getLogger("banditflags")
    old_level = sdk_logger.level
    root.addHandler(capture)
    sdk_logger.setLevel(logging.DEBUG)
    try:
        traced = make_client(tracer_provider=tp, logger_provider=lp, meter_provider=mp)
        evented = make_client(telemetry="event", logger_provider=lp, meter_provider=mp)
        for client in (traced, evented):
            assert client.wait_until_ready(5.0)
            tracer = tp.get_tracer("app")
            rules: set[Any] = set()
            for i in range(20):
                for attrs in attribute_sets(i):
                    for unit in (f"u{i}", "pinned", None):
                        with tracer.start_as_current_span("request"):
                            d = client.decide("p", unit, attributes=attrs)
                            client.variant("p", unit, attributes=attrs)
                            client.decide("k", unit, attributes=attrs)
                            client.decide("nope", unit, attributes=attrs)
                            rules.add(d.rule)
                            client.track(d, reward=1.5)
                            if d.token:
                                client.track(d.token, reward=0.5)
                            client.track("p", unit, reward=2.0)
                            client.track(d, reward=3.0, metric="latency")
            assert rules >= {None, "target", "mail", "split", "geo"}  # every path was taken
            assert client.flush(5.0)
        tp.force_flush()
        emitted: list[str] = [json.dumps(body) for body in server.event_requests]
        assert emitted and any('"rule": "geo"' in e for e in emitted)  # rule ids do go out
        for s in spans.get_finished_spans():
            emitted.append(repr(dict(s.attributes or {})))
            emitted += [repr((e.name, dict(e.attributes or {}))) for e in s.events]
            emitted += [repr(dict(link.attributes or {})) for link in s.links]
        evaluations = [s for s in spans.get_finished_spans() if s.name == "feature_flag.evaluation"]
        assert {(s.attributes or {}).get("banditflags.rule") for s in evaluations} >= {"geo", "target", None}
        for r in logs.get_finished_logs():
            emitted.append(repr((r.log_record.body, dict(r.log_record.attributes or {}))))
        assert logs.get_finished_logs()
        data = reader.get_metrics_data()
        emitted.append(data.to_json() if data is not None else "")
        for rec in capture.records:
            emitted.append(rec.getMessage())
            if rec.exc_info:
                emitted.append(logging.Formatter().formatException(rec.exc_info))
        leaks = [e for e in emitted if SECRET in e or SECRET.lower() in e.lower()]
        assert leaks == []
    finally:
        root.removeHandler(capture)
        sdk_logger.setLevel(old_level)
        tp.shutdown()
        lp.shutdown()
        mp.shutdown()
