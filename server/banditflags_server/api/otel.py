"""Optional OpenTelemetry tracing of the server's own requests (the ``otel`` extra).

Off unless ``BANDITFLAGS_OTEL_TRACES`` is set:

- ``console``: spans printed to standard output as they end (for a look, or a test);
- ``otlp``: spans sent in batches with the OTLP/HTTP exporter, configured by the standard
  ``OTEL_EXPORTER_OTLP_*`` variables (needs ``pip install 'banditflags[server,otel]'``).

Each HTTP request gets a server span ``"{method} {route}"`` (e.g. ``GET /v1/config``) with
``http.request.method``, ``url.path``, ``url.scheme``, ``http.route`` and ``http.response.status_code``,
continuing the caller's trace from its ``traceparent`` header. ``service.name`` defaults to
``banditflags-server`` (``OTEL_SERVICE_NAME`` overrides it). Already running under
``opentelemetry-instrument``? Then leave this off: that tool traces Starlette itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from starlette.middleware import Middleware

ENV = "BANDITFLAGS_OTEL_TRACES"
CHOICES = ("console", "otlp")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_lock = threading.Lock()
_provider: Any = None


class _HeaderGetter:
    """Reads ASGI headers (a list of byte pairs) for the W3C propagator."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        k = key.lower().encode("latin-1")
        found = [v.decode("latin-1") for n, v in carrier.get("headers") or [] if n.lower() == k]
        return found or None

    def keys(self, carrier: Scope) -> list[str]:
        return [n.decode("latin-1") for n, _ in carrier.get("headers") or []]


_GETTER = _HeaderGetter()


class TracingMiddleware:
    """A pure ASGI middleware: one SERVER span per HTTP request."""

    def __init__(self, app: ASGIApp, tracer_provider: Any = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer("banditflags_server", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        parent = propagate.extract(scope, getter=_GETTER)  # type: ignore[arg-type]
        attrs = {"http.request.method": method, "url.path": scope.get("path", ""), "url.scheme": "http"}
        with self.tracer.start_as_current_span(
            method, context=parent, kind=trace.SpanKind.SERVER, attributes=attrs
        ) as span:

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                        span.set_attribute("error.type", str(status))
                await send(message)

            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if isinstance(template, str):
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")


def _install(kind: str) -> Any:
    """Make (once per process) the tracer provider for ``kind``."""
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        try:
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
            )
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(
                f"{ENV}={kind} needs the OpenTelemetry SDK: pip install 'banditflags[server,otel]'"
            ) from exc
        # The SDK's provider flushes and shuts down at interpreter exit by itself.
        name = os.environ.get("OTEL_SERVICE_NAME") or "banditflags-server"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        if kind == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:  # pragma: no cover
                raise RuntimeError(
                    f"{ENV}=otlp needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'banditflags[server,otel]'"
                ) from exc
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider = provider
        return provider


def middleware(env: MutableMapping[str, str] | None = None) -> list[Middleware]:
    """The middleware list for the app: empty unless ``BANDITFLAGS_OTEL_TRACES`` asks for tracing."""
    kind = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if not kind or kind == "off":
        return []
    if kind not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)} (or empty), not {kind!r}")
    return [Middleware(TracingMiddleware, tracer_provider=_install(kind))]
