"""The console's routes, all under ``/console`` (``/`` redirects there), and what ``app.py`` needs from
the console: ``routes`` to mount, ``is_console`` and ``error_page`` for HTML errors on console URLs::

    GET  /console/login            POST /console/login          POST /console/logout
    GET  /console/                 GET  /console/new            POST /console/new
    GET  /console/flags/{key}      POST /console/flags/{key}/state | /exploration | /policy | /targeting
    GET  /console/segments         GET  /console/new-segment    POST /console/new-segment
    GET  /console/segments/{key}   POST /console/segments/{key} | /console/segments/{key}/delete
    GET  /console/static/...       (the stylesheet and ``console.js``, which opens the dialogs)
"""

from __future__ import annotations

from starlette.convertors import StringConvertor, register_url_convertor
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from banditflags_server.console import auth, flag_pages, forms, segment_pages, targeting
from banditflags_server.console.templating import HERE, PREFIX, error_page, is_console

__all__ = ["error_page", "is_console", "routes"]


class FlagKey(StringConvertor):
    """A path segment that can be a flag's key (api/schemas.py ``FlagKey``): anything else is a 404
    before a handler (or the database, which cannot even compare a NUL) sees it."""

    regex = "[a-z0-9][a-z0-9_.-]{0,63}"


register_url_convertor("flag_key", FlagKey())


class Static(StaticFiles):
    """The stylesheet and the script, never sniffed into another type."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


routes: list[BaseRoute] = [
    Route("/", flag_pages.root, methods=["GET"]),
    Route(PREFIX, flag_pages.root, methods=["GET"]),
    Route(PREFIX + "/", flag_pages.flags_page, methods=["GET"]),
    Route(PREFIX + "/login", auth.login_get, methods=["GET"]),
    Route(PREFIX + "/login", auth.login_post, methods=["POST"]),
    Route(PREFIX + "/logout", auth.logout, methods=["POST"]),
    Route(PREFIX + "/new", forms.new_page, methods=["GET"]),
    Route(PREFIX + "/new", forms.new_post, methods=["POST"]),
    Route(PREFIX + "/flags/{key:flag_key}", flag_pages.flag_page, methods=["GET"]),
    Route(PREFIX + "/flags/{key:flag_key}/state", forms.set_state, methods=["POST"]),
    Route(PREFIX + "/flags/{key:flag_key}/exploration", forms.set_exploration, methods=["POST"]),
    Route(PREFIX + "/flags/{key:flag_key}/policy", forms.set_policy, methods=["POST"]),
    Route(PREFIX + "/flags/{key:flag_key}/targeting", targeting.save_targeting, methods=["POST"]),
    Route(PREFIX + "/segments", segment_pages.list_page, methods=["GET"]),
    Route(PREFIX + "/new-segment", segment_pages.new_page, methods=["GET"]),
    Route(PREFIX + "/new-segment", segment_pages.new_post, methods=["POST"]),
    Route(PREFIX + "/segments/{key:flag_key}", segment_pages.edit_page, methods=["GET"]),
    Route(PREFIX + "/segments/{key:flag_key}", segment_pages.edit_post, methods=["POST"]),
    Route(PREFIX + "/segments/{key:flag_key}/delete", segment_pages.delete_post, methods=["POST"]),
    Mount(PREFIX + "/static", Static(directory=str(HERE / "static")), name="static"),
]
