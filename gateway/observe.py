"""What operators see of one gateway beyond the request path: the circuit breaker's
state as metrics, the tail's consumer lag sampled on a timer, and the admin endpoints
that read and change this process's log levels.

``GET /v1/admin/log-levels`` answers ``{"process", "root", "levels"}``;
``PUT /v1/admin/log-levels`` with ``{"levels": {"gateway.hub": "DEBUG"}}`` (or
``{"levels": "gateway.hub=DEBUG,..."}``) sets the named loggers (``NOTSET``: inherit
again) and answers the same. Both need the ``admin`` scope of the operators' tenant
(``TIDEMARK_DEFAULT_TENANT``): a log level is the whole process's, not a tenant's. A
change is audited and applies to this one process only: behind a load balancer an
operator puts it to each gateway (the answer's ``process`` says which one answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from eventlog import loglevels, statsd
from gateway import auth
from gateway.audit import AUDIT
from gateway.errors import Forbidden
from gateway.metrics import METRICS
from gateway.problems import Problem
from gateway.routes import VALIDATORS
from gateway.services import SERVICES, Services

log = logging.getLogger(__name__)

LOG_LEVELS_PATH: Final = "/v1/admin/log-levels"
BREAKER: Final = "kafka"


def install(app: web.Application) -> None:
    """Breaker metrics, the clients' buffered bytes, the lag sampler, the StatsD push
    (``TIDEMARK_STATSD``) and the admin routes, on a gateway app."""
    services = app[SERVICES]
    metrics = app[METRICS]
    transitions = {state: metrics.breaker_transitions.labels(BREAKER, state)
                   for state in ("closed", "half-open", "open")}
    services.breaker.on_change = lambda state: transitions[state].inc()
    metrics.breaker_state.labels(BREAKER).set_function(
        lambda: services.breaker.state_code)
    metrics.buffered.set_function(
        lambda: sum(session.buffered() for session in services.sessions))
    app.cleanup_ctx.append(_lag_ctx)
    app.cleanup_ctx.append(_statsd_ctx)
    app.router.add_get(LOG_LEVELS_PATH, get_log_levels)
    app.router.add_put(LOG_LEVELS_PATH, put_log_levels)


async def _lag_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(sample_tail_lag(app[SERVICES]), name="tail-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _statsd_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    async with statsd.pushing(services.metrics.registry, services.settings.statsd_config):
        yield


async def sample_tail_lag(services: Services) -> None:
    """Every ``TIDEMARK_LAG_SAMPLE_SECONDS``, set ``tidemark_tail_lag_records`` of each
    partition the hub tails (from the consumer's own numbers; no request to Kafka)."""
    gauges = services.metrics.tail_lag
    bound: dict[int, Any] = {}
    while True:
        await asyncio.sleep(services.settings.lag_sample_s)
        hub = services.hub
        if hub is None or not services.ready.is_set():
            continue
        try:
            lags = await hub.lag()
        except KafkaError as exc:  # the hub is being replaced (a reconnect): next time
            log.debug("tail lag not sampled: %s", exc)
            continue
        for partition, lag in lags.items():
            gauge = bound.get(partition)
            if gauge is None:
                gauge = bound[partition] = gauges.labels(str(partition))
            gauge.set(lag)


def _admin(request: web.Request) -> auth.Identity:
    identity = auth.authorize(request, auth.ADMIN)
    tenant = request.app[SERVICES].settings.operators_tenant
    if identity.tenant != tenant:
        raise Forbidden(f"log levels belong to the whole process: an admin of tenant "
                        f"{tenant!r} (the operators') sets them", scope=auth.ADMIN)
    return identity


def _answer(request: web.Request) -> web.Response:
    body = {"process": request.app[SERVICES].instance, **loglevels.LOG_LEVELS.current()}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_log_levels(request: web.Request) -> web.Response:
    _admin(request)
    return _answer(request)


async def put_log_levels(request: web.Request) -> web.Response:
    identity = _admin(request)
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "send the body as application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from exc
    request.app[VALIDATORS].check("log_levels", body)
    try:
        levels = loglevels.parse(body["levels"])
    except loglevels.LogLevelError as exc:
        raise Problem(422, str(exc), field="/levels") from exc
    loglevels.LOG_LEVELS.apply(levels)
    log.warning("log levels changed by %s of tenant %s: %s", identity.sub, identity.tenant,
                levels)
    request.app[AUDIT].record(request, "log-levels", outcome="ok", levels=levels)
    return _answer(request)
