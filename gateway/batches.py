"""``POST /v1/batches``: one child stream per distinct query and one batch stream that
follows them (docs/batches.md).

The gateway makes every stream at once, so the answer names them all and each counts
against the caller's limits before anything is written: the children (their first event
and index record, no job yet) and the batch stream with its job, which carries the plan
(``schemas.batch.BatchPlan``). The worker that runs the ``batch`` generator starts the
children's jobs as its strategy says, follows their events and writes the batch's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from eventlog.index import StreamInfo
from gateway import auth, tracing
from gateway.audit import AUDIT
from gateway.auth import Identity
from gateway.limits import active_stream
from gateway.problems import Problem
from gateway.routes import (
    EXTERNAL,
    GENERATORS,
    VALIDATORS,
    _authorize,
    _deadline,
    _json,
    _json_body,
    _ready,
    stream_answer,
)
from gateway.services import Services
from schemas import batch
from schemas.validation import BatchRequest

PATH = "/v1/batches"


def plan_children(req: BatchRequest, key: batch.QueryKey = batch.normalise,
                  ) -> list[batch.Child]:
    """The batch's children: one per group of equal queries (``key``: the hook for a
    similarity cache), with their priority weights."""
    return [batch.Child(indices=tuple(group), query=req.queries[group[0]],
                        weight=batch.weight_of(group, req.strategy.weights))
            for group in batch.group_queries(req.queries, key)]


async def _create_all(services: Services, identity: Identity, req: BatchRequest,
                      children: list[batch.Child]) -> tuple[list[StreamInfo], StreamInfo]:
    """Write the children (no jobs) and then the batch stream with its job."""
    creator = services.creator
    assert creator is not None
    settings = services.settings
    priority = settings.limits.tiers[identity.tier].priority
    made = await asyncio.gather(*(creator.create(
        generator=req.generator, query=child.query, options=req.options, with_job=False,
        tenant=identity.tenant, owner=identity.owner) for child in children))
    plan = batch.BatchPlan(
        queries=req.queries, strategy=req.strategy, aggregation=req.aggregation,
        children=tuple(batch.Child(indices=c.indices, query=c.query, weight=c.weight,
                                   stream=info.to_json().decode())
                       for c, info in zip(children, made, strict=True)),
        generator=req.generator, options=req.options,
        cap=settings.limits.batch_max_concurrency, priority=priority)
    info = await creator.create(
        generator=batch.GENERATOR, query=f"batch of {len(req.queries)} queries",
        options=plan.to_options(), with_job=True, tenant=identity.tenant,
        owner=identity.owner, priority=priority)
    return list(made), info


@tracing.server_span(tracing.CREATE)
async def create_batch(request: web.Request) -> web.StreamResponse:
    identity = await _authorize(request, auth.CREATE)
    services = await _ready(request)
    body = await _json_body(request)
    req = request.app[VALIDATORS].batch_request(body)
    most = services.settings.limits.batch_max_queries
    if len(req.queries) > most:
        raise Problem(422, f"a batch takes at most {most} queries, got {len(req.queries)} "
                      "(TIDEMARK_BATCH_MAX_QUERIES)", field="/queries")
    known = request.app[GENERATORS] - {EXTERNAL}
    if req.generator not in known:
        raise Problem(422, f"unknown generator {req.generator!r} for a batch's queries; "
                      f"known: {', '.join(sorted(known))}", field="/generator")
    children = plan_children(req)
    async with contextlib.AsyncExitStack() as slots_held:
        # Every stream takes its slot first, all or none: a batch past the caller's
        # active-stream limits answers 429 and writes nothing.
        slots = [await slots_held.enter_async_context(active_stream(services.limits,
                                                                    identity))
                 for _ in range(len(children) + 1)]
        async with _deadline(services):
            made, info = await _create_all(services, identity, req, children)
        for slot, child_info in zip(slots, [*made, info], strict=True):
            slot.bind(child_info.stream_id)
    tracing.annotate(stream=info.stream_id, tenant=identity.tenant, generator=batch.GENERATOR,
                     partition=info.partition, offset=info.first_offset)
    services.metrics.created.labels(batch.GENERATOR).inc()
    services.metrics.created.labels(req.generator).inc(len(made))
    request.app[AUDIT].record(request, "create_batch", outcome="ok", stream=info.stream_id,
                              queries=len(req.queries), children=len(made))
    first_of = {i: child.index for child in children for i in child.indices}
    answers = [stream_answer(request, identity, m.stream_id) for m in made]
    by_query: list[dict[str, Any]] = []
    for pos, child in enumerate(children):
        for i in child.indices:
            entry = {"index": i, **answers[pos]}
            if first_of[i] != i:
                entry["duplicate_of"] = first_of[i]
            by_query.append(entry)
    by_query.sort(key=lambda e: int(e["index"]))
    answer = stream_answer(request, identity, info.stream_id)
    answer.update(batch_id=info.stream_id, queries=len(req.queries), generated=len(made),
                  children=by_query)
    return _json(answer, status=201, headers={"Location": f"/v1/streams/{info.stream_id}"})


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, create_batch)
