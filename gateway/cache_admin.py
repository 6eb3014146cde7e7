"""Admin deletes of the similar-query cache's entries (docs/cache.md).

``DELETE /v1/cache/streams/{id}`` removes the cached answers a stream gives;
``DELETE /v1/cache/entries?query=...[&generator=...]`` those of a query (its normalised
form, ``eventlog.cache.normalise``; of one generator, or of all). Both need the
``admin`` scope and act on the caller's tenant only: another tenant's entries are never
read out nor removed. They answer ``{"deleted": n}`` once the tombstones are written
(workers drop the entries within one fetch of their cache tail). A gateway never loads
the embedding model for this: it reads the compacted topic and writes tombstones.
"""

from __future__ import annotations

import asyncio
from typing import Final

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from eventlog.cache import delete_entries, matches, normalise
from gateway import auth
from gateway.audit import AUDIT
from gateway.problems import Problem
from gateway.services import SERVICES, Services

STREAMS_PATH: Final = "/v1/cache/streams/{id}"
ENTRIES_PATH: Final = "/v1/cache/entries"
#: Longest ``query`` parameter (the create request's ``query`` limit).
MAX_QUERY: Final = 8000


def _services(request: web.Request) -> Services:
    services = request.app[SERVICES]
    if not services.ready.is_set() or services.producer is None:
        raise Problem(503, "the gateway is not connected to Kafka yet")
    return services


async def _delete(request: web.Request, identity: auth.Identity, what: str, *,
                  stream_id: str | None = None, norm: str | None = None,
                  generator: str | None = None) -> web.Response:
    services = _services(request)
    assert services.producer is not None
    settings = services.settings
    try:
        async with asyncio.timeout(settings.gateway.request_timeout_s):
            deleted = await delete_entries(
                settings.kafka, services.producer, settings.log.namespace,
                lambda e: matches(e, tenant=identity.tenant, stream_id=stream_id, norm=norm,
                                  generator=generator))
    except (KafkaError, TimeoutError) as exc:
        raise Problem(503, f"the cache topic could not be read or written: "
                      f"{type(exc).__name__}") from exc
    request.app[AUDIT].record(request, "cache-delete", outcome="ok", what=what,
                              deleted=deleted)
    return web.Response(body=orjson.dumps({"deleted": deleted}),
                        content_type="application/json")


async def delete_stream(request: web.Request) -> web.Response:
    identity = auth.authorize(request, auth.ADMIN)
    stream_id = request.match_info["id"]
    if not 1 <= len(stream_id) <= 256:
        raise Problem(400, "a stream id has 1 to 256 characters")
    return await _delete(request, identity, "stream", stream_id=stream_id)


async def delete_query(request: web.Request) -> web.Response:
    identity = auth.authorize(request, auth.ADMIN)
    query = request.query.get("query", "")
    generator = request.query.get("generator")
    if not 1 <= len(query) <= MAX_QUERY:
        raise Problem(400, f"give the query to forget as ?query= (1 to {MAX_QUERY} "
                      "characters)", field="query")
    if generator is not None and not 1 <= len(generator) <= 64:
        raise Problem(400, "a generator name has 1 to 64 characters", field="generator")
    norm = normalise(query)
    if not norm:
        raise Problem(400, "the query has no letters or digits", field="query")
    return await _delete(request, identity, "query", norm=norm, generator=generator)


def add_routes(app: web.Application) -> None:
    app.router.add_delete(STREAMS_PATH, delete_stream)
    app.router.add_delete(ENTRIES_PATH, delete_query)
