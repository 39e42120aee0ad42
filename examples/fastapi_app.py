"""A FastAPI app that picks a variant per request and credits a conversion in a later request.

The same endpoints as ``flask_app.py`` (``GET /api/checkout``, ``POST /convert`` with the decision
``token``), async. Nothing on the event loop waits on I/O: ``decide()`` and ``track()`` only touch
memory (the client's own threads talk to the server), and the start-up wait and the final flush run
in a worker thread through ``banditflags.web.await_ready`` / ``aclose``. The unit id comes from
``ASGIUnitIdMiddleware`` (``X-Unit-Id`` header, else the ``bf_uid`` cookie, else a new cookie)::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_SDK_KEY=... \\
        uvicorn --app-dir examples fastapi_app:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import banditflags
from banditflags.web import ASGIUnitIdMiddleware, aclose, await_ready, current_unit_id

FLAG = os.environ.get("EXAMPLE_FLAG", "checkout-button")
DEFAULT = "blue"


def make_client() -> banditflags.Client:
    """The app's one client, configured from the environment (no I/O here)."""
    return banditflags.Client(
        os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080"),
        sdk_key=os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0],
        refresh_interval=float(os.environ.get("BANDITFLAGS_REFRESH_INTERVAL", "5")),
        flush_interval=float(os.environ.get("BANDITFLAGS_FLUSH_INTERVAL", "2")),
    )


def create_app(client: banditflags.Client) -> FastAPI:
    """The FastAPI app around ``client``; the lifespan waits (bounded) for it and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await await_ready(client, float(os.environ.get("BANDITFLAGS_STARTUP_TIMEOUT", "0.5")))
        yield
        await aclose(client, timeout=5.0)  # flushes what is left, off the event loop

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(ASGIUnitIdMiddleware)

    @app.get("/api/checkout")
    async def checkout() -> dict[str, Any]:
        d = client.decide(FLAG, current_unit_id(), default=DEFAULT)  # memory only: fine on the loop
        return {
            "unit": current_unit_id(),
            "variant": d.variant,
            "value": d.value,
            "reason": d.reason.value,
            "version": d.version,
            "token": d.token,
            "pid": os.getpid(),
        }

    @app.post("/convert")
    async def convert(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        token = body.get("token") if isinstance(body, dict) else None
        reward = float(body.get("reward", 1.0)) if isinstance(body, dict) else 1.0
        ok = bool(token) and client.track(token, current_unit_id(), reward=reward)
        return JSONResponse({"credited": ok}, status_code=200 if ok else 400)

    return app


app = create_app(make_client())
