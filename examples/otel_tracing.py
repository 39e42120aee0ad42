"""A trace with a flag decision and its reward, printed by the OpenTelemetry console exporter.

Request 1 (``GET /checkout``) decides which checkout button a user sees: the SDK adds a child span
``feature_flag.evaluation`` with the semantic-convention attributes and puts the span's ids in the
decision token. Request 2 (``POST /purchase``, another trace, as if in another process) credits the
reward from the token: the SDK adds a ``banditflags.reward`` event to that request's span and a link to
the decision span, so an APM shows which decision earned which reward.

Needs the OpenTelemetry SDK (``pip install opentelemetry-sdk``) and a server with a flag
(``banditflags serve`` prints the keys on first start)::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_ADMIN_KEY=... BANDITFLAGS_SDK_KEY=... \\
        python examples/otel_tracing.py
"""

from __future__ import annotations

import os

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import banditflags

URL = os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080")
ADMIN_KEY = os.environ["BANDITFLAGS_ADMIN_KEY"]
SDK_KEY = os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0]
FLAG = os.environ.get("OTEL_EXAMPLE_FLAG", "checkout-button")


def main() -> None:
    # The application's tracing set-up, once at start: the SDK finds the global provider by itself.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("shop")

    with httpx.Client(base_url=URL, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        created = admin.post(
            "/v1/flags", json={"key": FLAG, "variants": ["blue", "green"], "control": "blue"}
        )
        if created.status_code not in (201, 409):  # 409: it exists from an earlier run
            raise SystemExit(f"could not create the flag: {created.text}")

    with banditflags.Client(URL, sdk_key=SDK_KEY) as client:
        client.wait_until_ready(timeout=5.0)

        with tracer.start_as_current_span("GET /checkout"):
            decision = client.decide(FLAG, "user-42")
            token = decision.token  # e.g. put in the checkout form, or in a job's payload

        with tracer.start_as_current_span("POST /purchase"):
            client.track(token, reward=1.0)  # links this span to the decision span

        print(f"decision: variant={decision.variant} reason={decision.reason} token={token}")
        print("flushed:", client.flush(timeout=5.0))
    provider.shutdown()


if __name__ == "__main__":
    main()
