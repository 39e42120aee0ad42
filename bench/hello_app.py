"""The baseline for bench_server.py: a bare Starlette app under uvicorn with the server's uvicorn settings.

``GET /`` answers a short text; ``POST /events`` reads and parses a JSON body and answers 202 with a
small JSON object (what an ingest endpoint does before any validation or storage).

Run: python bench/hello_app.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def events(request: Request) -> Response:
    body = json.loads(await request.body())
    return JSONResponse({"batch_id": body.get("batch_id"), "duplicate": False}, status_code=202)


app = Starlette(routes=[Route("/", hello), Route("/events", events, methods=["POST"])])

if __name__ == "__main__":
    # The same uvicorn settings as `banditflags serve` (server/banditflags_server/runner.py).
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", lifespan="on")
    uvicorn.Server(config).run()
