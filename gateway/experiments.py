"""A/B experiments at the gateway: a new stream's assignment, and the routes that show
the definitions (``GET /v1/experiments``, admin) and a caller's own assignment
(``GET /v1/experiments/mine``).

At ``POST /v1/streams`` the creator's variants (``eventlog.experiments``: by tenant and
``sub``) are recorded on the stream, and their generator ``options`` are merged under
the request's own (the request wins, key by key) before the job is written, so a worker
that takes the job over sees the same options. The delivery changes are applied where
the stream is served (``gateway.streaming``), from the variants in its first event.

Admin tokens are tenant-scoped: ``GET /v1/experiments`` lists the experiments the
caller's tenant takes part in (``tenants`` is not shown: it would name other tenants).
``GET /v1/experiments/mine`` needs only ``streams:create``: the variants it names are
those the caller's next stream gets, and each stream's status shows them anyway.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from aiohttp import web

from eventlog.experiments import Experiment, Experiments
from gateway import auth
from gateway.auth import Identity
from gateway.services import SERVICES

PATH = "/v1/experiments"
MINE_PATH = "/v1/experiments/mine"


class Assignment(NamedTuple):
    """A new stream's variants and the generator options its job gets."""

    variants: dict[str, str]
    options: dict[str, Any]


def assign_stream(experiments: Experiments, identity: Identity,
                  options: dict[str, Any]) -> Assignment:
    """The creator's variants, and ``options`` over their variants' options."""
    variants = experiments.assign(identity.tenant, identity.sub)
    if not variants:
        return Assignment({}, options)
    merged = {**experiments.changes(variants).options, **options}
    return Assignment(variants, merged)


async def _authorize(request: web.Request, scope: str) -> Identity:
    identity = auth.authorize(request, scope)
    limits = request.app[SERVICES].limits
    if limits is not None:
        # Nothing here touches Kafka: pass uncounted while the limits store is down.
        await limits.request(identity, fail_open=True)
    return identity


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json")


def _described(experiment: Experiment) -> dict[str, Any]:
    out = experiment.to_json()
    out.pop("tenants", None)
    out["allTenants"] = experiment.tenants is None
    return out


async def list_experiments(request: web.Request) -> web.Response:
    identity = await _authorize(request, auth.ADMIN)
    experiments = request.app[SERVICES].settings.gateway.experiments
    return _json({
        "tenant": identity.tenant, "sub": identity.sub,
        "experiments": [_described(e) for e in experiments
                        if e.tenants is None or identity.tenant in e.tenants],
        "assignment": experiments.assign(identity.tenant, identity.sub)})


async def my_assignment(request: web.Request) -> web.Response:
    identity = await _authorize(request, auth.CREATE)
    experiments = request.app[SERVICES].settings.gateway.experiments
    return _json({"tenant": identity.tenant, "sub": identity.sub,
                  "assignment": experiments.assign(identity.tenant, identity.sub)})


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, list_experiments)
    app.router.add_get(MINE_PATH, my_assignment)
