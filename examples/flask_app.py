"""A Flask app that picks a variant per request and credits a conversion in a later request.

- ``GET /`` shows the checkout button in the visitor's variant; ``GET /api/checkout`` says the same as
  JSON (variant, value, reason, decision token, and the worker's pid).
- ``POST /convert`` with the decision ``token`` (form field or JSON) credits a conversion to the arm
  that visitor was shown, in this process or any other.
- The visitor's unit id comes from ``banditflags.web.UnitIdMiddleware``: the ``X-Unit-Id`` header, else
  the ``bf_uid`` cookie, else a new id set as that cookie, so each visitor stays on one variant.

The client is created at import time: under ``gunicorn --preload`` that is in the master, before the
workers fork; each worker restarts the client's threads on its own, keeps polling the configuration
and sends its own counts (and the rest at exit). Start-up waits for the first configuration at most
``BANDITFLAGS_STARTUP_TIMEOUT`` seconds (0.5 s by default), then serves the defaults until it comes::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_SDK_KEY=... \\
        gunicorn --preload -w 2 --chdir examples flask_app:app
"""

from __future__ import annotations

import html
import os

from flask import Flask, Response, jsonify, request

import banditflags
from banditflags.web import UnitIdMiddleware, current_unit_id

FLAG = os.environ.get("EXAMPLE_FLAG", "checkout-button")
DEFAULT = "blue"


def make_client() -> banditflags.Client:
    """The app's one client, configured from the environment."""
    return banditflags.Client(
        os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080"),
        sdk_key=os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0],
        refresh_interval=float(os.environ.get("BANDITFLAGS_REFRESH_INTERVAL", "5")),
        flush_interval=float(os.environ.get("BANDITFLAGS_FLUSH_INTERVAL", "2")),
    )


def create_app(client: banditflags.Client) -> Flask:
    """The Flask app around ``client`` (tests build it with their own client)."""
    app = Flask(__name__)

    def decision_json() -> dict[str, object]:
        d = client.decide(FLAG, current_unit_id(), default=DEFAULT)
        return {
            "unit": current_unit_id(),
            "variant": d.variant,
            "value": d.value,
            "reason": d.reason.value,
            "version": d.version,
            "token": d.token,
            "pid": os.getpid(),
        }

    @app.get("/")
    def page() -> str:
        d = decision_json()
        colour = html.escape(str(d["value"]))
        token = html.escape(str(d["token"] or ""))
        return (
            f"<!doctype html><title>checkout</title><p>You see the {html.escape(str(d['variant']))} button."
            f'<form method="post" action="/convert"><input type="hidden" name="token" value="{token}">'
            f'<button style="background:{colour}">Buy</button></form>'
        )

    @app.get("/api/checkout")
    def checkout() -> Response:
        return jsonify(decision_json())

    @app.post("/convert")
    def convert() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        token = request.form.get("token") or body.get("token")
        reward = float(body.get("reward", 1.0))
        ok = bool(token) and client.track(token, current_unit_id(), reward=reward)
        return jsonify(credited=ok, pid=os.getpid()), (200 if ok else 400)

    app.wsgi_app = UnitIdMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


client = make_client()
# Bounded: a server that is down or slow delays start-up by at most this much, never past
# gunicorn's worker timeout; decisions answer the default (reason `error`) until the config arrives.
client.wait_until_ready(timeout=float(os.environ.get("BANDITFLAGS_STARTUP_TIMEOUT", "0.5")))
app = create_app(client)

if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
