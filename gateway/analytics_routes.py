"""``GET /v1/analytics`` and ``GET /v1/analytics/live``: the analytics document
(``gateway.analytics_fold``) of the caller's tenant, as JSON or as an SSE feed.

Both need the ``admin`` scope. A tenant admin sees their own tenant only. An admin of
the operator tenant (``TIDEMARK_OPERATOR_TENANT``, default ``TIDEMARK_DEFAULT_TENANT``)
may pass ``?tenant=<t>`` for another tenant or ``?tenant=*`` for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from typing import Final

import orjson
from aiohttp import web

from eventlog.settings import TENANT_PATTERN
from gateway import auth, sse
from gateway.analytics_fold import ALL, WINDOWS, parse_windows
from gateway.errors import Forbidden
from gateway.problems import Problem
from gateway.services import SERVICES, Services
from gateway.streaming import SSE_HEADERS

PATH: Final = "/v1/analytics"
LIVE_PATH: Final = "/v1/analytics/live"
#: The SSE event name of each document on the live feed.
EVENT: Final = "analytics"


def _windows(request: web.Request) -> list[str]:
    try:
        return parse_windows(request.query.getall("window", []))
    except ValueError as exc:
        raise Problem(400, f"window {str(exc)!r} is not one of "
                      f"{', '.join(WINDOWS)} (query parameter `window`)") from None


def selected_tenant(identity: auth.Identity, requested: str | None, *,
                    operator_tenant: str) -> str:
    """Whose figures the caller sees: their own tenant, or (an operator) the one asked
    for or ``*``. A tenant admin asking for another tenant: 403."""
    if requested is None or requested == identity.tenant:
        return identity.tenant
    if identity.tenant != operator_tenant:
        raise Forbidden("only admins of the operator tenant see other tenants' analytics")
    if requested != ALL and not _valid_tenant(requested):
        raise Problem(400, "tenant must be a tenant name or * (query parameter `tenant`)")
    return requested


def _valid_tenant(value: str) -> bool:
    return re.match(TENANT_PATTERN, value) is not None


async def _prepare(request: web.Request) -> tuple[Services, str, list[str]]:
    identity = auth.authorize(request, auth.ADMIN)
    if identity.stream is not None:
        raise Forbidden("a read token reads its one stream only")
    windows = _windows(request)
    services = request.app[SERVICES]
    settings = services.settings
    selected = selected_tenant(identity, request.query.get("tenant"),
                               operator_tenant=settings.operators_tenant)
    await _loaded(services)
    return services, selected, windows


async def _loaded(services: Services) -> None:
    """Wait (up to ``TIDEMARK_READY_WAIT``) for Kafka and for the analytics topics to be
    read up to where they were at start."""
    async def wait() -> None:
        await services.ready.wait()  # set once connected, the analytics feed started
        if services.analytics is None:
            raise Problem(503, "the gateway is shutting down")
        await services.analytics.loaded.wait()

    try:
        await asyncio.wait_for(wait(), services.settings.gateway.ready_wait_s)
    except TimeoutError:
        raise Problem(503, "the gateway has not read the analytics topics yet") from None


async def analytics(request: web.Request) -> web.Response:
    services, selected, windows = await _prepare(request)
    assert services.analytics is not None
    doc = await services.analytics.document(selected=selected, windows=windows)
    return web.Response(body=orjson.dumps(doc), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def analytics_live(request: web.Request) -> web.StreamResponse:
    """The document at once, then every ``TIDEMARK_ANALYTICS_LIVE_INTERVAL``, with
    ``: ping`` comments between; ends after ``TIDEMARK_MAX_RESPONSE_SECONDS`` or when the
    gateway shuts down (the client reconnects)."""
    services, selected, windows = await _prepare(request)
    feed = services.analytics
    assert feed is not None
    gw = services.settings.gateway
    every = services.settings.analytics.live_interval_s
    ping = min(gw.heartbeat_s, 15.0)
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS,
                                                       "Tidemark-Gateway": services.instance})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + gw.max_response_s if gw.max_response_s else math.inf
    head = sse.frame_retry(gw.retry_ms)
    try:
        while not services.closing.is_set():
            doc = await feed.document(selected=selected, windows=windows)
            await response.write(head + sse.frame_event(orjson.dumps(doc), event=EVENT))
            head = b""
            next_doc = loop.time() + every
            while (now := loop.time()) < next_doc:
                if now >= deadline:
                    await response.write(sse.frame_comment(
                        "closing: response lifetime reached; reconnect"))
                    return await _end(response)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(services.closing.wait(),
                                           min(next_doc, deadline, now + ping) - now)
                if services.closing.is_set():
                    break
                if loop.time() < min(next_doc, deadline):
                    await response.write(sse.PING)
        await response.write(sse.frame_comment("closing: gateway shutting down; reconnect"))
        return await _end(response)
    except ConnectionError:
        return response


async def _end(response: web.StreamResponse) -> web.StreamResponse:
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, analytics)
    app.router.add_get(LIVE_PATH, analytics_live)

