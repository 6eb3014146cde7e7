"""Mounting the Durable Streams surface on an aiohttp application.

:func:`mount` adds the routes under ``TIDEMARK_DS_BASE_PATH``, the :class:`DsLog` that
runs for the app's lifetime (``cleanup_ctx``, restarted with backoff when it fails; the
host asks :meth:`DsLog.not_ready` for its readiness), and a middleware that answers CORS
preflights under the base path with the protocol's headers. The host application
passes how it authorizes a request (``authorize``): ``durable`` never imports the
host's auth, and the host never imports ``durable`` (``tidemark.cli`` composes both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from durable import protocol
from durable.routes import DS_AUTHORIZE, DS_LOG, DS_PREFIX, Authorize, add_routes
from durable.view import DsLog
from eventlog.settings import Settings

log = logging.getLogger(__name__)

DS_TASK = web.AppKey("ds_task", asyncio.Task[None])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mount(app: web.Application, settings: Settings, authorize: Authorize) -> None:
    """Serve the protocol at ``<base>/v1/stream/<path>`` on ``app`` (nothing when the
    base path setting is empty)."""
    prefix = settings.durable.base_path
    if not prefix:
        return
    app[DS_LOG] = DsLog(settings)
    app[DS_AUTHORIZE] = authorize
    app[DS_PREFIX] = prefix
    app.cleanup_ctx.append(_ds_ctx)
    app.on_shutdown.append(_on_shutdown)
    app.middlewares.insert(0, _preflight(prefix))
    add_routes(app, prefix)


async def _ds_ctx(app: web.Application) -> AsyncIterator[None]:
    ds = app[DS_LOG]
    task = app[DS_TASK] = asyncio.create_task(ds.supervise(), name="durable-streams")
    task.add_done_callback(_report)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await ds.close()


def _report(task: asyncio.Task[None]) -> None:
    # DsLog.supervise restarts the reader itself; it ends only when cancelled.
    if not task.cancelled() and task.exception() is not None:
        log.error("durable streams: the log supervisor failed", exc_info=task.exception())


async def _on_shutdown(app: web.Application) -> None:
    ds = app[DS_LOG]
    ds.closing = True
    ds.wake_all()


def _preflight(prefix: str) -> Any:
    @web.middleware
    async def ds_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix + "/"):
            return await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        if (request.method == hdrs.METH_OPTIONS
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin or "*",
                "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ", ".join(protocol.REQUEST_HEADERS),
                "Access-Control-Expose-Headers": ", ".join(protocol.RESPONSE_HEADERS),
                "Access-Control-Max-Age": "600", "Vary": "Origin"})
        response = await handler(request)
        if origin is not None and not response.prepared:
            response.headers.setdefault("Access-Control-Allow-Origin", "*")
            response.headers.setdefault("Access-Control-Expose-Headers",
                                        ", ".join(protocol.RESPONSE_HEADERS))
        return response

    return ds_cors
