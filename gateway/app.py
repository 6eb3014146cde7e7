"""The gateway's composition: services and routes in one aiohttp app.

The HTTP server listens at once; Kafka clients start in the background (``/readyz``
answers 503 until they are up) and are closed in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from eventlog.settings import Settings
from gateway import (
    ai_chat,
    analytics_routes,
    auth,
    batches,
    cache_admin,
    dashboard,
    experiments,
    hardening,
    openapi,
    routes,
    transports,
    webhooks,
)
from gateway.audit import AUDIT, Audit
from gateway.auth import AUTHENTICATOR, Authenticator
from gateway.metrics import METRICS
from gateway.observe import install as install_observability
from gateway.problems import problem_middleware, read_only_middleware
from gateway.services import READY_CHECKS, SERVICES, Services

log = logging.getLogger(__name__)

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


async def _audit_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    app[AUDIT].close()


async def dev_token(request: web.Request) -> web.Response:
    """``tidemark dev`` only: a token for the demo page (this route exists nowhere else)."""
    settings = request.app[SERVICES].settings
    token = auth.mint_token(settings.auth.jwt_secret, sub="demo-user",
                            tenant=settings.auth.default_tenant,
                            scope=f"{auth.CREATE} {auth.READ} {auth.CANCEL}", ttl_s=3600,
                            audience=settings.auth.jwt_audience or None)
    return web.json_response({"token": token, "expires_in": 3600})


def create_app(settings: Settings, *, dev: bool = False) -> web.Application:
    """The gateway; ``dev``: also the demo page's token endpoint (``tidemark dev``)."""
    authenticator = Authenticator(settings.auth, settings.limits)
    if not authenticator.enabled:
        log.warning("TIDEMARK_AUTH=none: anyone who can reach this gateway may read, "
                    "create, publish to and cancel every stream of tenant %r",
                    settings.auth.default_tenant)
    elif not authenticator.can_issue:
        log.warning("no TIDEMARK_JWT_SECRET: POST /v1/streams answers without a read_token")
    middlewares: list[Middleware] = [problem_middleware]
    if settings.log.mirror_of:
        middlewares.append(read_only_middleware(settings.log.mirror_of))
    app = web.Application(middlewares=middlewares,
                          client_max_size=settings.gateway.max_body_bytes)
    services = app[SERVICES] = Services(settings)
    app[READY_CHECKS] = []
    app[METRICS] = services.metrics
    app[AUTHENTICATOR] = authenticator
    app[AUDIT] = Audit(settings.auth.audit_log, gateway=services.instance)
    app.cleanup_ctx.append(_services_ctx)
    app.cleanup_ctx.append(_audit_ctx)
    app.on_shutdown.append(_on_shutdown)
    routes.add_routes(app)
    batches.add_routes(app)
    transports.add_routes(app)
    ai_chat.add_routes(app)
    openapi.add_routes(app)
    experiments.add_routes(app)
    analytics_routes.add_routes(app)
    cache_admin.add_routes(app)
    webhooks.add_routes(app, settings)
    dashboard.add_routes(app)
    hardening.install(app, settings.gateway)
    install_observability(app)
    if dev and authenticator.can_issue:
        app.router.add_get("/dev/token", dev_token)
    return app
