"""A one-file Django app that picks a variant per request and credits a conversion in a later request.

The same shape as ``flask_app.py``: ``GET /api/checkout`` answers the visitor's variant as JSON (with
the decision token), ``POST /convert`` credits a conversion from the token, and
``banditflags.web.UnitIdMiddleware`` keeps each visitor on one unit id (``X-Unit-Id`` header, else the
``bf_uid`` cookie, else a new id set as that cookie). In a real project the client lives in an
``AppConfig.ready()`` or a settings-level module, created once per process; the WSGI wrapper goes in
``wsgi.py``. Run it with::

    BANDITFLAGS_URL=http://127.0.0.1:8080 BANDITFLAGS_SDK_KEY=... \\
        gunicorn --preload -w 2 --chdir examples django_app:application
"""

from __future__ import annotations

import json
import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret"),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
    )

# Imported after settings.configure(): Django reads its settings at import time.
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import banditflags
from banditflags.web import UnitIdMiddleware, current_unit_id

FLAG = os.environ.get("EXAMPLE_FLAG", "checkout-button")
DEFAULT = "blue"

client = banditflags.Client(
    os.environ.get("BANDITFLAGS_URL", "http://127.0.0.1:8080"),
    sdk_key=os.environ["BANDITFLAGS_SDK_KEY"].split(",")[0],
    refresh_interval=float(os.environ.get("BANDITFLAGS_REFRESH_INTERVAL", "5")),
    flush_interval=float(os.environ.get("BANDITFLAGS_FLUSH_INTERVAL", "2")),
)
# Bounded start-up: with the server down, requests answer the default until the config arrives.
client.wait_until_ready(timeout=float(os.environ.get("BANDITFLAGS_STARTUP_TIMEOUT", "0.5")))


@require_GET
def checkout(request: HttpRequest) -> JsonResponse:
    d = client.decide(FLAG, current_unit_id(), default=DEFAULT)
    return JsonResponse(
        {"unit": current_unit_id(), "variant": d.variant, "value": d.value, "reason": d.reason.value,
         "version": d.version, "token": d.token}
    )  # fmt: skip


@csrf_exempt  # an API endpoint called with the token; a real form would keep Django's CSRF check
@require_POST
def convert(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = {}
    token = request.POST.get("token") or (body.get("token") if isinstance(body, dict) else None)
    ok = bool(token) and client.track(token, current_unit_id())
    return JsonResponse({"credited": ok}, status=200 if ok else 400)


urlpatterns = [path("api/checkout", checkout), path("convert", convert)]

application = UnitIdMiddleware(get_wsgi_application())
