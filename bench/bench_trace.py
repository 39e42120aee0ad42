"""Decision spans (DESIGN.md §8): a decision inside a recording trace vs one bare OpenTelemetry SDK span.

Budget (DESIGN.md §8): ``decide()`` inside a recording span, with its ``feature_flag.evaluation`` child
span, costs at most 1.15x one bare span that carries the same attributes (our own overhead); the ratio
to a bare span without attributes is printed too (as close to it as the SDK allows: its validation of
the attributes alone is most of the difference). The SDK is set up as an application would: a
``TracerProvider`` with a ``SimpleSpanProcessor`` and an exporter that drops the spans (so exporting
costs nothing and the whole cost is measured in the calling thread). Printed, all measured in the same
run and interleaved:

- ``bare span``: ``tracer.start_span("feature_flag.evaluation").end()`` under the same parent;
- ``bare span + attributes``: the same with the 10 attributes our span carries, set by hand (what an
  application instrumenting its own flag check would pay);
- ``decide()`` and ``variant()`` inside the trace (bucketing, exposure, span, token ids; compiled where
  the extension is built, ``BANDITFLAGS_NO_SPEEDUPS=1`` for the Python path);
- ``decide()`` / ``variant()`` with the provider installed but no span recording (the cheap check);
- ``decide()`` with ``telemetry="off"``.

Run: .venv/bin/python bench/bench_trace.py [--batches 300] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import compare, config, transport
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from banditflags import Client


class NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(NullExporter()))
    tracer = tp.get_tracer("bench")
    kw = dict(transport=transport(config()), flush_interval=1.0, max_queue=10_000_000)
    client = Client("http://bench", "bf_sdk_bench", tracer_provider=tp, **kw)  # type: ignore[arg-type]
    off = Client("http://bench", "bf_sdk_bench", telemetry="off", **kw)  # type: ignore[arg-type]
    assert client.wait_until_ready(5.0) and off.wait_until_ready(5.0), "config did not load"
    attrs = {
        "feature_flag.key": "checkout-button",
        "feature_flag.provider.name": "banditflags",
        "feature_flag.result.reason": "split",
        "feature_flag.result.variant": "green",
        "feature_flag.version": "1",
        "feature_flag.set.id": "http://bench",
        "feature_flag.context.id": "5610d9bc3668077224bdcfd8377dc9a5",
        "banditflags.propensity": 0.3,
        "banditflags.policy": "thompson",
        "banditflags.exploration": 1.0,
    }
    start = tracer.start_span
    decide, variant, decide_off = client.decide, client.variant, off.decide

    def timer(fn):  # type: ignore[no-untyped-def]
        import time

        perf = time.perf_counter_ns

        def run() -> float:
            t0 = perf()
            for u in ids:
                fn(u)
            return (perf() - t0) / n

        return run

    untraced = compare(
        {
            "decide(), provider installed, no recording span": timer(lambda u: decide("checkout-button", u)),
            "variant(), provider installed, no recording span": timer(
                lambda u: variant("checkout-button", u)
            ),
            "decide(), telemetry off": timer(lambda u: decide_off("checkout-button", u)),
        },
        args.batches,
    )
    with tracer.start_as_current_span("request"):
        traced = compare(
            {
                "bare span": timer(lambda u: start("feature_flag.evaluation").end()),
                "bare span + 10 attributes": timer(
                    lambda u: start("feature_flag.evaluation", attributes=attrs).end()
                ),
                "decide() in a recording trace": timer(lambda u: decide("checkout-button", u)),
                "variant() in a recording trace": timer(lambda u: variant("checkout-button", u)),
            },
            args.batches,
        )
    client.close()
    off.close()
    for name, (med, p99) in {**traced, **untraced}.items():
        print(f"{name:<50}: median {med:9.1f} ns   p99 {p99:9.1f} ns")
    bare, bare_attrs = traced["bare span"][0], traced["bare span + 10 attributes"][0]
    dec = traced["decide() in a recording trace"][0]
    print(f"ratio decide() in trace / bare span               : {dec / bare:.2f}x")
    print(f"ratio decide() in trace / bare span + attributes  : {dec / bare_attrs:.2f}x  (budget <= 1.15x)")
    print(f"cost of our 10 attributes in the SDK span         : {bare_attrs - bare:.0f} ns")
    path = (
        "compiled (banditflags._speedups)"
        if client.speedups
        else "Python (no extension, or BANDITFLAGS_NO_SPEEDUPS=1)"
    )
    print(f"decide()'s span path                              : {path}")
    print("PASS" if dec <= 1.15 * bare_attrs else "OVER BUDGET")


if __name__ == "__main__":
    main()
