"""The Starlette application factory: routes, JSON error handlers, and a lifespan that opens the store
and runs the recompute loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api import config as api_config
from banditflags_server.api import events as api_events
from banditflags_server.api import flags as api_flags
from banditflags_server.api import health as api_health
from banditflags_server.api import metrics, openapi, otel, stream
from banditflags_server.api import segments as api_segments
from banditflags_server.api.auth import KeyRing
from banditflags_server.api.context import Context
from banditflags_server.api.responses import error_response
from banditflags_server.api.throttle import BadKeyThrottle
from banditflags_server.console import routes as console
from banditflags_server.errors import ApiError
from banditflags_server.service.recompute import recompute_loop
from banditflags_server.settings import Settings
from banditflags_server.storage.notify import RevisionListener
from banditflags_server.storage.outage import UNAVAILABLE, OutageLog
from banditflags_server.storage.reports import ReportTracker, flush_loop
from banditflags_server.storage.store import Store

log = logging.getLogger("banditflags_server")

routes = [
    *api_health.routes,
    *api_config.routes,
    *api_events.routes,
    *api_flags.routes,
    *api_segments.routes,
    *metrics.routes,
    *stream.routes,
    *openapi.routes,
    *console.routes,
]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if console.is_console(request):
        return console.error_page(request, exc.status_code, str(exc.detail))
    if exc.status_code == 404:
        err = ApiError(404, "no such endpoint")
    elif exc.status_code == 405:
        err = ApiError(405, "method not allowed on this endpoint", headers=dict(exc.headers or {}))
    else:
        err = ApiError(exc.status_code, str(exc.detail))
    return error_response(err)


async def _unavailable(request: Request, exc: Exception) -> Response:
    # The database is down, full, read-only or unreachable: nothing was changed (the transaction did
    # not commit), so the caller may retry. Said once per outage in the log, not a traceback each time.
    outage: OutageLog = request.app.state.db_outage
    outage.failed(exc)
    message = "the database is unavailable; nothing was changed, retry later"
    if console.is_console(request):
        return console.error_page(request, 503, message)
    return error_response(ApiError(503, message, headers={"Retry-After": "5"}))


async def _internal(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log (no request headers, so no key); the client gets a plain JSON 500.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(500, "internal error"))


def create_app(settings: Settings, store: Store | None = None) -> Starlette:
    """Build the app. The lifespan opens ``settings.db`` (unless a ``store`` is given), registers the
    settings' keys, and runs the recompute loop, the stream's revision watcher and the sdk report
    writer until shutdown; it closes the store at the end."""
    hub = stream.StreamHub(
        poll=settings.stream_poll,
        heartbeat=settings.stream_heartbeat,
        max_streams=settings.max_streams,
        listen_poll=settings.listen_poll,
    )
    reports = ReportTracker()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        st = store if store is not None else await run_in_threadpool(Store.open, settings.url)
        try:
            if store is None:
                await run_in_threadpool(st.sync_settings_keys, settings.admin_keys, settings.sdk_keys)
            ring = KeyRing(st, recheck=settings.key_recheck, throttle=BadKeyThrottle(settings.bad_key_limit))
            await run_in_threadpool(ring.load)
            app.state.ctx = Context(settings=settings, store=st)
            app.state.keys = ring
            stop = asyncio.Event()
            hub.reset()
            if st.dialect == "postgresql":
                loop = asyncio.get_running_loop()
                hub.listener = RevisionListener(
                    str(st.engine.url.render_as_string(hide_password=False)),
                    lambda: loop.call_soon_threadsafe(hub.notified),
                )
                hub.listener.start()
            tasks = [
                asyncio.create_task(hub.run(app.state.ctx, stop)),
                asyncio.create_task(flush_loop(reports, st.engine, stop)),
            ]
            if settings.recompute_loop:
                tasks.append(
                    asyncio.create_task(
                        recompute_loop(st, settings.recompute_tick, stop, lease=settings.leader_lease)
                    )
                )
            try:
                yield
            finally:
                stop.set()
                hub.close()
                for task in tasks:
                    await task
                if hub.listener is not None:
                    await run_in_threadpool(hub.listener.stop)
                if app.state.ctx.committer is not None:
                    await run_in_threadpool(app.state.ctx.committer.close)
        finally:
            await run_in_threadpool(st.close)

    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            **dict.fromkeys(UNAVAILABLE, _unavailable),
            Exception: _internal,
        },
        # otel's is empty unless BANDITFLAGS_OTEL_TRACES is set.
        middleware=[*otel.middleware(), Middleware(stream.PokeOnWrite, hub=hub)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.streams = hub
    app.state.reports = reports
    # Each says an outage once and its recovery once (storage/outage.py), so each is made once, here.
    app.state.db_outage = OutageLog("requests", log)
    app.state.config_outage = OutageLog("config", logging.getLogger("banditflags_server.config"))
    app.state.readiness = api_health.ReadinessProbe()
    return app
