"""``GET /v1/openapi.json``: the contract (``schemas.openapi``), public, no token."""

from __future__ import annotations

from aiohttp import web

from schemas.openapi import document_bytes

PATH = "/v1/openapi.json"


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, openapi)
