"""``GET /dashboard``: the operator page, and ``GET /dashboard/assets/{name}``: its files.

The page and its assets are static files of the package (``gateway/static/``; the chart
library, uPlot, is vendored in ``gateway/static/vendor/``), public and holding no data.
The page's script reads an admin token from the URL fragment or a paste field, keeps it
in ``sessionStorage``, sets it as the ``tidemark_token`` cookie for ``/v1/analytics``
only, and follows ``GET /v1/analytics/live`` with an ``EventSource`` (docs/operations.md).

Only the files named in :data:`ASSETS` are served; any other name is a 404. Every file is
read once, when the app is built. The HTML page gets its Content-Security-Policy from
``gateway.hardening`` (no inline script or style: ``script-src 'self'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Final

from aiohttp import web

from gateway.problems import Problem

PATH: Final = "/dashboard"
ASSET_PATH: Final = "/dashboard/assets/{name}"

#: Asset name -> (file under ``gateway/static/``, content type).
ASSETS: Final = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css"),
}
#: The page changes with the package; a browser revalidates rather than keep an old copy.
_CACHE: Final = {"Cache-Control": "no-cache"}


def _read(relative: str) -> bytes:
    return resources.files("gateway").joinpath("static", *relative.split("/")).read_bytes()


class Assets:
    """Named static files of the package, read once; any other name is a 404."""

    def __init__(self, files: Mapping[str, tuple[str, str]], owner: str) -> None:
        self.owner = owner
        self.files = {name: (_read(file), content_type)
                      for name, (file, content_type) in files.items()}

    async def serve(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise Problem(404, f"{self.owner} has no file {request.match_info['name']!r}")
        body, content_type = found
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=_CACHE)


class Dashboard:
    """The page and its assets, read from the package once."""

    def __init__(self) -> None:
        self.page = _read("dashboard.html")
        self.assets = Assets(ASSETS, "the dashboard")

    async def serve_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", charset="utf-8",
                            headers=_CACHE)


def add_routes(app: web.Application) -> None:
    dashboard = Dashboard()
    app.router.add_get(PATH, dashboard.serve_page)
    app.router.add_get(ASSET_PATH, dashboard.assets.serve)
