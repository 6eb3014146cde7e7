"""The gateway's composition: services and routes in one aiohttp app.

The HTTP server listens at once; Kafka clients start in the background (``/readyz``
answers 503 until they are up) and are closed in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from eventlog.settings import Settings
from gateway import routes
from gateway.problems import problem_middleware
from gateway.services import SERVICES, Services

#: The task that runs the gateway's Kafka side; the process ends if it fails.
SERVICES_TASK = web.AppKey("services_task", asyncio.Task[None])


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    task = app[SERVICES_TASK] = asyncio.create_task(services.run(), name="gateway-services")
    yield
    # on_shutdown has already ended the open responses (see _on_shutdown).
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await services.close()


async def _on_shutdown(app: web.Application) -> None:
    """End open SSE responses so their clients reconnect to another gateway."""
    services = app[SERVICES]
    services.closing.set()
    if services.hub is not None:
        services.hub.wake_all()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[problem_middleware],
                          client_max_size=settings.gateway.max_body_bytes)
    app[SERVICES] = Services(settings)
    app.cleanup_ctx.append(_services_ctx)
    app.on_shutdown.append(_on_shutdown)
    routes.add_routes(app)
    return app
