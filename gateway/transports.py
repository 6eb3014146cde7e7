"""The routes of the transports beside SSE (WebSocket, long-poll) and of talking back;
see docs/transports.md."""

from __future__ import annotations

from aiohttp import web

from gateway import poll, talkback, ws


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/streams/{id}/ws", ws.stream_ws)
    app.router.add_get("/v1/streams/{id}/poll", poll.stream_poll)
    app.router.add_post("/v1/streams/{id}/input", talkback.post_input)

