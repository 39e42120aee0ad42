"""OpenTelemetry decision spans, events, reward links and metrics, through in-memory exporters.

The tests never install a global provider (that can happen once per process); they pass providers to
the client, as an application with several providers would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from banditflags import Client, Decision, Reason
from banditflags._telemetry import tracer_provider_installed
from banditflags._token import parse_token

MakeClient = Callable[..., Client]
DEPRECATED = {
    "feature_flag.variant",
    "feature_flag.provider_name",
    "feature_flag.evaluation.reason",
    "feature_flag.evaluation.error.message",
}
SPLIT_KEYS = {
    "feature_flag.key",
    "feature_flag.result.variant",
    "feature_flag.result.reason",
    "feature_flag.provider.name",
    "feature_flag.version",
    "feature_flag.set.id",
    "feature_flag.context.id",
    "banditflags.propensity",
    "banditflags.policy",
    "banditflags.exploration",
}


class Otel:
    """A tracer provider, a logger provider and a meter provider, each with an in-memory exporter."""

    def __init__(self, sampler: Any = None) -> None:
        self.spans = InMemorySpanExporter()
        self.tp = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = self.tp.get_tracer("app")
        self.logs = InMemoryLogRecordExporter()
        self.lp = LoggerProvider()
        self.lp.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.reader = InMemoryMetricReader()
        self.mp = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def evaluations(self) -> list[ReadableSpan]:
        return self.finished("feature_flag.evaluation")

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
        return out

    def shutdown(self) -> None:
        self.tp.shutdown()
        self.lp.shutdown()
        self.mp.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    for s in o.spans.get_finished_spans():  # no test ever emits a deprecated name
        assert not DEPRECATED & set(s.attributes or {}), s.attributes
    o.shutdown()


@pytest.fixture
def traced(make_client: MakeClient, otel: Otel) -> Client:
    client = make_client(tracer_provider=otel.tp, logger_provider=otel.lp, meter_provider=otel.mp)
    assert client.wait_until_ready(5.0)
    return client


def test_decision_span_has_exactly_the_semantic_convention_attributes(traced: Client, otel: Otel) -> None:
    with otel.tracer.start_as_current_span("request") as parent:
        d = traced.decide("btn", "user-42")
    (span,) = otel.evaluations()
    attrs = dict(span.attributes or {})
    assert set(attrs) == SPLIT_KEYS
    assert attrs["feature_flag.key"] == "btn"
    assert attrs["feature_flag.result.variant"] == d.variant
    assert attrs["feature_flag.result.reason"] == "split"
    assert attrs["feature_flag.provider.name"] == "banditflags"
    assert attrs["feature_flag.version"] == "1"
    assert attrs["feature_flag.set.id"] == "http://bf.test"
    assert attrs["banditflags.propensity"] == 0.5
    assert attrs["banditflags.policy"] == "thompson"
    assert attrs["banditflags.exploration"] == 1.0
    # parent/child, and the decision carries the child span's ids into its token
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert d.trace_id == f"{span.context.trace_id:032x}" and d.span_id == f"{span.context.span_id:016x}"
    tok = parse_token(d.token)
    assert tok is not None and (tok.trace_id, tok.span_id) == (d.trace_id, d.span_id)
    assert (tok.flag, tok.version, tok.arm) == ("btn", 1, d.arm)
    assert span.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("context_id", ["hashed", "raw", "none"])
def test_the_span_fast_path_records_what_the_general_path_does(
    make_client: MakeClient,
    server: Any,
    otel: Otel,
    context_id: str,
    track_impl: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """decide() inside a recording span makes a split decision's span on its fast path (compiled, or
    in decide()'s own frame): the same span attributes, Decision fields and type, the span's ids, and
    one exposure each, as the general path (Client._traced_decide) that takes every other case."""
    client = make_client(tracer_provider=otel.tp, telemetry_context_id=context_id)
    assert client.wait_until_ready(5.0)
    general_calls, compiled = [], []
    general = client._traced_decide
    monkeypatch.setattr(client, "_traced_decide", lambda *a: general_calls.append(a) or general(*a))
    decider = client._decider
    assert (decider is not None) is (track_impl == "compiled")
    if decider is not None:  # count what the compiled path answered (None: it left the call to Python)
        monkeypatch.setattr(client, "_decider", lambda *a: compiled.append(decider(*a)) or compiled[-1])
    units = [f"u{i}" for i in range(40)]
    with otel.tracer.start_as_current_span("request"):
        # The first pass caches each unit's context id (Python); the second finds it cached.
        fast = [client.decide("btn", u) for u in units]
        compiled.clear()
        fast += [client.decide("btn", u) for u in units]
        assert general_calls == []  # all of them took a fast path
        slow = [general("btn", u, None, None) for u in units * 2]
    if track_impl == "compiled":  # the second pass, all cached, was answered by the compiled path
        assert len(compiled) == len(units) and None not in compiled
    spans = otel.evaluations()
    assert len(spans) == 4 * len(units)
    n = 2 * len(units)
    assert [dict(s.attributes or {}) for s in spans[:n]] == [dict(s.attributes or {}) for s in spans[n:]]
    for d, g, span in zip(fast, slow, spans, strict=False):
        assert type(d) is type(g) and d[:7] == g[:7] and d.rule is None and d.error_type is None
        assert (d.trace_id, d.span_id) == (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
        assert d.decision_id is not None and len(d.decision_id) == 16 and d.decision_id != g.decision_id
        assert client.decide.__self__ is client
    assert len({d.decision_id for d in fast + slow}) == 4 * len(units)
    assert ("feature_flag.context.id" in (spans[0].attributes or {})) is (context_id != "none")
    assert client.flush(5.0)
    assert sum(server.exposures().values()) == 4 * len(units)
    assert client._tel.errors == 0
    # track(flag, unit) finds the decision the last decide() remembered, whichever path made it
    assert client.track("btn", units[0]) and client.flush(5.0)
    assert server.rewards()[("btn", 1, slow[len(units)].arm)][0] >= 1


def test_the_span_fast_path_leaves_the_rest_to_the_general_path(
    make_client: MakeClient, server: Any, build: Any, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed flag, user units, int unit ids and unknown flags go the general way, before anything is
    recorded, so nothing is counted twice."""
    per_user = {"reward": "binary", "direction": "maximize", "unit": "user", "credit_window": 60}
    server.set_config(
        build.config(
            build.flag("btn"), build.flag("usr", objective=per_user), build.flag("off", state="killed")
        )
    )
    client = make_client(tracer_provider=otel.tp)
    assert client.wait_until_ready(5.0)
    general_calls: list[tuple[Any, ...]] = []
    general = client._traced_decide
    monkeypatch.setattr(client, "_traced_decide", lambda *a: general_calls.append(a) or general(*a))
    with otel.tracer.start_as_current_span("request"):
        assert client.decide("usr", "u1").reason == Reason.SPLIT
        assert client.decide("off", "u1").reason == Reason.DISABLED
        assert client.decide("btn", 7).reason == Reason.SPLIT
        assert client.decide("nope", "u1").reason == Reason.ERROR
    assert [c[:2] for c in general_calls] == [("usr", "u1"), ("off", "u1"), ("btn", 7), ("nope", "u1")]
    assert len(otel.evaluations()) == 4
    assert client.flush(5.0)
    # One exposure each for the bucketed two (a killed flag and an error record none).
    arms = client.decide("usr", "u1").arm, client.decide("btn", 7).arm
    assert server.exposures() == {("usr", 1, arms[0]): 1, ("btn", 1, arms[1]): 1}


def test_variant_makes_the_same_span(traced: Client, otel: Otel) -> None:
    with otel.tracer.start_as_current_span("request"):
        v = traced.variant("btn", "user-7")
        assert traced.variant("nope", "user-7", "fallback") == "fallback"
    ok, err = otel.evaluations()
    assert (
        set(ok.attributes or {}) == SPLIT_KEYS and (ok.attributes or {})["feature_flag.result.variant"] == v
    )
    assert (err.attributes or {})["error.type"] == "flag_not_found"


def test_error_and_disabled_spans(make_client: MakeClient, server: Any, build: Any, otel: Otel) -> None:
    server.set_config(build.config(build.flag("btn"), build.flag("off", state="killed")))
    client = make_client(tracer_provider=otel.tp)
    assert client.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request"):
        client.decide("nope", "u1", default="x")
        client.decide("btn", None)
        client.decide("off", "u1")
    nf, missing, killed = otel.evaluations()
    a = dict(nf.attributes or {})
    assert a == {
        "feature_flag.key": "nope",
        "feature_flag.provider.name": "banditflags",
        "feature_flag.result.reason": "error",
        "feature_flag.set.id": "http://bf.test",
        "feature_flag.context.id": a["feature_flag.context.id"],
        "error.type": "flag_not_found",
        "feature_flag.error.message": "flag 'nope' not in config revision 1",
    }
    assert nf.status.status_code == StatusCode.ERROR
    b = dict(missing.attributes or {})
    assert b["error.type"] == "targeting_key_missing" and b["feature_flag.result.variant"] == "a"
    assert "feature_flag.context.id" not in b  # no unit id, nothing to hash
    c = dict(killed.attributes or {})
    assert c["feature_flag.result.reason"] == "disabled" and c["banditflags.propensity"] == 1.0
    assert "error.type" not in c and killed.status.status_code == StatusCode.UNSET


def test_no_span_when_nothing_records(make_client: MakeClient, otel: Otel) -> None:
    client = make_client(tracer_provider=otel.tp)
    assert client.wait_until_ready(5.0)
    d = client.decide("btn", "u1")  # no current span at all
    assert d.trace_id is None and d.token == f"bf2:btn:1:{d.arm}:{d.decision_id}"
    with trace.use_span(trace.INVALID_SPAN):  # a non-recording current span
        client.decide("btn", "u1")
    sampled_out = Otel(sampler=ALWAYS_OFF)
    with sampled_out.tracer.start_as_current_span("request"):  # the parent was not sampled
        client.decide("btn", "u1")
        client.track("btn", "u1")
    assert otel.evaluations() == [] and sampled_out.finished() == []


def test_global_provider_only_unless_one_is_passed(make_client: MakeClient, otel: Otel) -> None:
    # No global provider in this process: a client given none records nothing, even inside another
    # provider's recording span (its tracer would be a no-op anyway), and the check stays cheap.
    assert not tracer_provider_installed()
    client = make_client()
    assert client.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request"):
        d = client.decide("btn", "u1")
    assert d.trace_id is None and otel.evaluations() == []


def test_context_id_is_hashed_by_default_never_raw(make_client: MakeClient, otel: Otel) -> None:
    unit = "alice@example.com"
    a = make_client(tracer_provider=otel.tp)
    b = make_client(tracer_provider=otel.tp)  # same sdk key: same hash, so an APM can group by it
    other = make_client(tracer_provider=otel.tp, telemetry_context_id_key="another secret")
    raw = make_client(tracer_provider=otel.tp, telemetry_context_id="raw")
    none = make_client(tracer_provider=otel.tp, telemetry_context_id="none")
    for c in (a, b, other, raw, none):
        assert c.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request"):
        da = a.decide("btn", unit)
        b.decide("btn", unit)
        other.decide("btn", unit)
        a.track(da, reward=1)
    ids = [(s.attributes or {})["feature_flag.context.id"] for s in otel.evaluations()]
    assert ids[0] == ids[1] != ids[2] and len(ids[0]) == 32
    for s in otel.finished():  # PII: the unit id appears nowhere by default, not even in events
        values = [*(s.attributes or {}).values()]
        for e in s.events:
            values.extend((e.attributes or {}).values())
        assert unit not in values and not any(unit in str(v) for v in values)
    otel.spans.clear()
    with otel.tracer.start_as_current_span("request"):
        raw.decide("btn", unit)
        none.decide("btn", unit)
    r, n = otel.evaluations()
    assert (r.attributes or {})["feature_flag.context.id"] == unit
    assert "feature_flag.context.id" not in (n.attributes or {})


def test_reward_in_another_trace_links_to_the_decision_span(traced: Client, otel: Otel) -> None:
    with otel.tracer.start_as_current_span("render"):
        d = traced.decide("btn", "u1")
    decision_span = otel.evaluations()[0]
    with otel.tracer.start_as_current_span("checkout") as checkout:
        assert traced.track(d, reward=1)
        assert traced.track(d.token or "", reward=0)  # the same, from the token
        assert traced.track("btn", "u1", reward=0)  # by unit: no decision ids, no link
    (reward_span,) = otel.finished("checkout")
    assert reward_span.context.span_id == checkout.get_span_context().span_id
    assert reward_span.context.trace_id != decision_span.context.trace_id  # a different request
    assert [e.name for e in reward_span.events] == ["banditflags.reward"] * 3
    first = dict(reward_span.events[0].attributes or {})
    assert first == {
        "feature_flag.key": "btn",
        "feature_flag.result.variant": d.variant,
        "feature_flag.version": "1",
        "banditflags.reward": 1.0,
    }
    assert dict(reward_span.events[1].attributes or {})["banditflags.reward"] == 0.0
    assert dict(reward_span.events[2].attributes or {}) == {
        "feature_flag.key": "btn",
        "banditflags.reward": 0.0,
    }
    assert len(reward_span.links) == 2
    for link in reward_span.links:
        assert link.context.trace_id == decision_span.context.trace_id
        assert link.context.span_id == decision_span.context.span_id
        assert dict(link.attributes or {}) == {"feature_flag.key": "btn", "banditflags.link": "decision"}


def test_reward_from_another_process_links_by_token(make_client: MakeClient, otel: Otel) -> None:
    web = make_client(tracer_provider=otel.tp)
    worker = make_client(tracer_provider=otel.tp)
    assert web.wait_until_ready(5.0) and worker.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("web"):
        token = web.decide("btn", "u9").token
    assert token is not None and token.count(":") == 6  # bf2: flag, version, arm, did, trace, span
    with otel.tracer.start_as_current_span("worker"):
        assert worker.track(token, reward=1)
    (decision,) = otel.evaluations()
    (job,) = otel.finished("worker")
    assert [(lk.context.trace_id, lk.context.span_id) for lk in job.links] == [
        (decision.context.trace_id, decision.context.span_id)
    ]
    assert worker.flush(5.0)


def test_track_outside_a_trace_adds_nothing(traced: Client, otel: Otel) -> None:
    with otel.tracer.start_as_current_span("render"):
        d = traced.decide("btn", "u1")
    assert traced.track(d)
    assert [s.name for s in otel.finished()] == ["feature_flag.evaluation", "render"]
    assert all(not s.events and not s.links for s in otel.finished())


def test_event_mode_emits_the_log_based_event(make_client: MakeClient, otel: Otel) -> None:
    client = make_client(telemetry="event", tracer_provider=otel.tp, logger_provider=otel.lp)
    assert client.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request") as parent:
        d = client.decide("btn", "u1")
    client.decide("nope", "u1")  # outside any trace: still an event, with no trace ids
    first, second = (r.log_record for r in otel.logs.get_finished_logs())
    assert first.event_name == "feature_flag.evaluation"
    assert set(first.attributes or {}) == SPLIT_KEYS
    assert (first.attributes or {})["feature_flag.result.variant"] == d.variant
    pc = parent.get_span_context()
    assert (first.trace_id, first.span_id) == (pc.trace_id, pc.span_id)  # linked to the active trace
    assert (d.trace_id, d.span_id) == (f"{pc.trace_id:032x}", f"{pc.span_id:016x}")
    assert (second.attributes or {})["error.type"] == "flag_not_found" and not second.trace_id
    assert otel.evaluations() == []  # events instead of spans


def test_off_mode_emits_nothing(make_client: MakeClient, otel: Otel) -> None:
    client = make_client(
        telemetry="off", tracer_provider=otel.tp, logger_provider=otel.lp, meter_provider=otel.mp
    )
    assert client.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request"):
        d = client.decide("btn", "u1")
        client.track(d)
    assert d.trace_id is None and otel.evaluations() == [] and otel.logs.get_finished_logs() == ()
    assert otel.finished("request")[0].events == ()
    assert "banditflags.decisions" not in otel.metrics()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="telemetry"):
        Client("http://x", "k", telemetry="loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="telemetry_context_id"):
        Client("http://x", "k", telemetry_context_id="plain")  # type: ignore[arg-type]


class BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter on fire")


class BrokenProvider:
    """A tracer provider that fails: telemetry must never raise into the caller."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return BrokenTracer()


class BrokenSpan(trace.NonRecordingSpan):
    def is_recording(self) -> bool:
        raise RuntimeError("broken span")


def test_telemetry_failures_never_raise(make_client: MakeClient, otel: Otel) -> None:
    client = make_client(tracer_provider=BrokenProvider())
    assert client.wait_until_ready(5.0)
    with otel.tracer.start_as_current_span("request"):
        d = client.decide("btn", "u1")
        assert d.reason == Reason.SPLIT and d.variant in ("a", "b") and d.trace_id is None
        assert client.variant("btn", "u1") == d.variant
        assert client.track(d, reward=1)
    assert client._tel.errors >= 2
    with trace.use_span(BrokenSpan(trace.INVALID_SPAN_CONTEXT)):
        assert client.decide("btn", "u1").variant == d.variant
        assert client.variant("btn", "u1") == d.variant
        assert client.track(d, reward=0)  # (a second 1 would be a duplicate)
    assert client.flush(5.0)


class InterruptingTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt


class InterruptingProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return InterruptingTracer()


def test_an_interrupt_inside_the_span_reaches_the_caller(
    make_client: MakeClient, server: Any, otel: Otel, track_impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telemetry swallows errors, not Ctrl-C: a KeyboardInterrupt raised while the span is made goes on
    up, on the compiled path as on the Python one (the exposure is counted: it was recorded first)."""
    client = make_client(tracer_provider=InterruptingProvider())
    assert client.wait_until_ready(5.0)
    calls = []
    decider = client._decider
    if decider is not None:
        monkeypatch.setattr(client, "_decider", lambda *a: calls.append(a) or decider(*a))
    with otel.tracer.start_as_current_span("request"):
        for _ in range(2):  # the first caches the unit's context id (Python), the second finds it
            with pytest.raises(KeyboardInterrupt):
                client.decide("btn", "u1")
    assert len(calls) == (2 if track_impl == "compiled" else 0)
    assert client.flush(5.0)
    assert sum(server.exposures().values()) == 2


def test_unparseable_trace_ids_in_a_decision_do_not_raise(traced: Client, otel: Otel) -> None:
    d = Decision("btn", "a", "A", Reason.SPLIT, 1, 0, 0.5, trace_id="zz", span_id="yy")
    with otel.tracer.start_as_current_span("request"):
        assert traced.track(d, reward=1) is True
    assert traced._tel.errors == 1


def _points(otel: Otel, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(a.items())): v for a, v in otel.metrics().get(name, [])}


def test_metrics(make_client: MakeClient, server: Any, build: Any, otel: Otel) -> None:
    server.set_config(build.config(build.flag("btn"), build.flag("off", state="killed")))
    client = make_client(meter_provider=otel.mp)
    assert client.wait_until_ready(5.0)
    arms = {"a": 0, "b": 0}
    for i in range(40):
        arms[client.variant("btn", f"u{i}") or ""] += 1
    client.variant("off", "u1")
    client.decide("nope", "u1")
    client.variant("nope", "u1")
    d = client.decide("btn", "u1")
    client.track(d, reward=1)
    client.track(d, reward=0)
    assert client.flush(5.0)
    dec = _points(otel, "banditflags.decisions")
    key = "feature_flag.key"
    var, reason = "feature_flag.result.variant", "feature_flag.result.reason"
    arms[d.variant or ""] += 1
    for v, n in arms.items():
        assert dec[((key, "btn"), (reason, "split"), (var, v))] == n
    assert dec[((key, "off"), (reason, "disabled"), (var, "a"))] == 1
    assert dec[(("error.type", "flag_not_found"), (key, "nope"), (reason, "error"))] == 2
    rew = _points(otel, "banditflags.rewards")
    assert rew == {((key, "btn"), (var, d.variant)): 2}
    assert _points(otel, "banditflags.reward.sum") == {((key, "btn"), (var, d.variant)): 1.0}
    assert _points(otel, "banditflags.flush.failures") == {(): 0}
    assert _points(otel, "banditflags.events.dropped") == {(): 0}
    (age,) = _points(otel, "banditflags.config.age").values()
    assert 0 <= age < 60


def test_metrics_count_failures_and_drops_and_survive_close(
    make_client: MakeClient, server: Any, otel: Otel
) -> None:
    client = make_client(meter_provider=otel.mp, max_queue=5)
    assert client.wait_until_ready(5.0)
    server.events_status = 503
    for i in range(10):
        client.variant("btn", f"u{i}")  # counted in place: never dropped
        client.track("btn", f"u{i}", 0)  # 5 rewards fit in the buffer, 5 are dropped
    assert not client.flush(0.5)
    assert _points(otel, "banditflags.events.dropped")[()] == 5
    failures = _points(otel, "banditflags.flush.failures")[()]
    assert failures >= 1
    server.events_status = 202
    client.close(timeout=5.0)
    # counters never go down when a client closes
    assert _points(otel, "banditflags.events.dropped")[()] == 5
    assert _points(otel, "banditflags.flush.failures")[()] >= failures
    assert sum(_points(otel, "banditflags.decisions").values()) == 10


@pytest.mark.parametrize("module", ["banditflags._telemetry", "banditflags._metrics"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_token_parse_cache_is_bounded_and_skips_traced_tokens() -> None:
    from banditflags import _token

    plain = "bf1:btn:3:1"
    assert _token.parse_token(plain) is _token.parse_token(plain)  # parsed once
    traced = "bf1:btn:3:1:4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7"
    assert _token.parse_token(traced) == (
        "btn",
        3,
        1,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        None,
        None,
    )
    assert traced not in _token._parsed  # unique per decision: would only churn the cache
    assert _token.parse_token("bf1:btn:3:1:" + "0" * 32 + ":00f067aa0ba902b7") is None
    for i in range(1, _token._PARSED_MAX + 10):
        _token.parse_token(f"bf1:btn:{i}:0")
    assert len(_token._parsed) <= _token._PARSED_MAX


def test_hot_path_survives_an_api_without_the_private_provider_attribute() -> None:
    """If opentelemetry-api drops ``_TRACER_PROVIDER``, decisions take the public check, not the default."""
    import types

    from banditflags import _client

    bare = types.ModuleType("opentelemetry.trace")
    probe = _client._provider_probe(bare)
    assert probe._TRACER_PROVIDER is not None  # so the hot path goes on to ask for the current span
    assert _client._provider_probe(_client.trace_module) is _client.trace_module
