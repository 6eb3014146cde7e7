"""HTTP routes of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any, Final

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError

from eventlog import logcontext, plugins
from eventlog.cache import CachePrefs
from eventlog.errors import KafkaUnavailable, StreamNotFound
from eventlog.index import StreamInfo
from eventlog.jobs import send_cancel
from eventlog.settings import Settings
from eventlog.streams import Draft
from gateway import auth, streaming, tracing
from gateway.audit import AUDIT
from gateway.auth import AUTHENTICATOR, Identity
from gateway.dashboard import Assets
from gateway.delivery import Delivery
from gateway.errors import Forbidden
from gateway.experiments import assign_stream
from gateway.limits import FAIL_OPEN_SCOPES, active_stream
from gateway.lookup import Found
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.problems import Problem
from gateway.services import READY_CHECKS, SERVICES, Services
from gateway.sessions import DEFAULT_PAGE, MAX_PAGE, BadCursor, decode_cursor
from gateway.transport import Transport
from gateway.urls import transport_urls
from schemas import batch, events
from schemas.eventid import EventId, encode_event_id, parse_event_id
from schemas.streamid import owner_of
from schemas.validation import CreateRequest, Validators

#: ``external`` streams are written by a backend service through the publish API or the
#: publisher SDK; every other generator runs on workers.
EXTERNAL: Final = "external"
#: Generators the gateway accepts: ``external`` and the selected ``tidemark.generators``
#: plugins installed beside it (:func:`accepted_generators`).
GENERATORS = web.AppKey("generators", frozenset[str])


def accepted_generators(settings: Settings) -> frozenset[str]:
    """From package metadata only: no plugin code runs in a gateway. A plugin that is
    installed but broken is accepted here and its streams end with the worker's error."""
    names = plugins.selected_names(plugins.GENERATORS, settings.plugin_allow) | {EXTERNAL}
    # A batch stream's job names its children: only POST /v1/batches makes one.
    return names - {batch.GENERATOR}

VALIDATORS = web.AppKey("validators", Validators)


async def _ready(request: web.Request) -> Services:
    """The services, once connected. A request to a gateway that is still starting
    waits for it (bounded) rather than failing: an EventSource gives up for good on
    an HTTP error, but a short wait is invisible to it."""
    services = request.app[SERVICES]
    if not services.ready.is_set():
        try:
            await asyncio.wait_for(services.ready.wait(),
                                   services.settings.gateway.ready_wait_s)
        except TimeoutError:
            raise Problem(503, "the gateway is not connected to Kafka yet") from None
    return services


@contextlib.asynccontextmanager
async def _deadline(services: Services) -> AsyncIterator[None]:
    """Guard a request that writes to Kafka: fail fast while the circuit is open, and
    past the deadline fail with 503 (both count against the circuit)."""
    seconds = services.settings.gateway.request_timeout_s
    breaker = services.breaker
    breaker.check()
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        breaker.failure()
        raise KafkaUnavailable(f"Kafka did not answer within {seconds:g}s") from exc
    except (KafkaError, KafkaUnavailable):
        breaker.failure()
        raise
    breaker.success()


async def _json_body(request: web.Request) -> Any:
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "send the body as application/json")
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from exc


def _stream_id(request: web.Request) -> str:
    stream_id = request.match_info["id"]
    if not events.is_valid_stream_id(stream_id):
        raise StreamNotFound(f"no stream {stream_id!r}")
    return stream_id


async def _authorize(request: web.Request, scope: str) -> Identity:
    """:func:`auth.authorize`, then the request counted against the caller's requests
    per minute (reads and cancels pass uncounted while the limits store is down)."""
    identity = auth.authorize(request, scope)
    limits = request.app[SERVICES].limits
    if limits is not None:
        await limits.request(identity, fail_open=scope in FAIL_OPEN_SCOPES)
    return identity


async def _caller(request: web.Request, scope: str) -> tuple[Identity, str]:
    """The caller (holding ``scope``) and the stream id of the path, once the id alone
    has not shown the stream to be someone else's."""
    identity = await _authorize(request, scope)
    stream_id = _stream_id(request)
    claim(request, identity, stream_id)
    return identity, stream_id


def claim(request: web.Request, identity: Identity, stream_id: str) -> None:
    """This request is about ``stream_id``: refuse it now if the id alone shows the
    stream to be someone else's, and note whether the id decided (else :func:`_find`
    checks the stream's record)."""
    logcontext.bind(stream=stream_id)  # this request's log lines are about the stream
    request["tidemark.id_decides"] = auth.check_stream(
        identity, stream_id, default_tenant=_default_tenant(request))


def _default_tenant(request: web.Request) -> str:
    return request.app[SERVICES].settings.auth.default_tenant


async def _find(request: web.Request, services: Services, stream_id: str, identity: Identity,
                *, allow_pending: bool = False) -> Found:
    """The stream, if it is the caller's (else 404, exactly as if it did not exist)."""
    assert services.lookup is not None
    found = await services.lookup.find(stream_id, allow_pending=allow_pending)
    if not request["tidemark.id_decides"]:
        auth.check_record(identity, found.info, default_tenant=_default_tenant(request))
    return found


def _whose(request: web.Request, identity: Identity, info: StreamInfo) -> StreamInfo:
    """``info`` with its tenant and owner, before the gateway writes its index record (an
    external stream's end). A stream whose id decides whose it is was located from the
    log, which does not say: its id's tags do (checked against the caller by
    :func:`auth.check_stream`), so the record does not fall to the default tenant.
    An admin ending another user's stream cannot tell that user: the owner stays ""."""
    if not request["tidemark.id_decides"] or info.tenant:
        return info
    owner = owner_of(info.stream_id, identity.tenant, identity.sub)
    return info.evolve(tenant=identity.tenant, owner=owner or "")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, headers=headers,
                        content_type="application/json")


async def _describe(services: Services, info: StreamInfo, earliest: int) -> dict[str, Any]:
    assert services.hub is not None
    epoch = await services.hub.epoch(info.topic)
    return {
        "stream_id": info.stream_id,
        "status": info.status,
        "generator": info.generator,
        "namespace": info.namespace,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "last_seq": info.last_seq,
        # The stream's first record is its seq 0, unless retention took it.
        "first_event_id": encode_event_id(epoch, info.partition, earliest,
                                          0 if earliest == info.first_offset else None),
        "terminal_event_id": (None if info.terminal_offset is None else
                              encode_event_id(epoch, info.partition, info.terminal_offset,
                                              info.last_seq)),
        "events_url": f"/v1/streams/{info.stream_id}/events",
        "experiments": info.experiments,
    }


@tracing.server_span(tracing.CREATE)
async def create_stream(request: web.Request) -> web.StreamResponse:
    identity = await _authorize(request, auth.CREATE)
    services = await _ready(request)
    body = await _json_body(request)
    create = request.app[VALIDATORS].create_request(body)
    info = await make_stream(request, identity, services, create)
    stream_id = info.stream_id
    answer = stream_answer(request, identity, stream_id)
    answer["experiments"] = info.experiments
    return _json(answer, status=201, headers={"Location": f"/v1/streams/{stream_id}"})


def stream_answer(request: web.Request, identity: Identity, stream_id: str) -> dict[str, Any]:
    """How a create answers for one new stream: its id and URLs, with a read token for
    it when the gateway issues them."""
    url = f"/v1/streams/{stream_id}/events"
    answer: dict[str, Any] = {"stream_id": stream_id, "events_url": url,
                              "status_url": f"/v1/streams/{stream_id}"}
    authenticator = request.app[AUTHENTICATOR]
    if authenticator.can_issue:
        # A browser page follows the answer with this and can do nothing else with it.
        token, expires = authenticator.issue_read_token(identity, stream_id)
        answer.update(events_url=f"{url}?{auth.QUERY}={token}", read_token=token,
                      read_token_expires_at=expires)
    answer["urls"] = transport_urls(
        stream_id, f"{auth.QUERY}={answer['read_token']}" if "read_token" in answer else "")
    return answer


async def make_stream(request: web.Request, identity: Identity, services: Services,
                      create: CreateRequest) -> StreamInfo:
    """Create the stream ``create`` asks for, for ``identity`` (who holds
    ``streams:create``), and its job: the checks, limits, experiments, session list,
    metrics and audit of ``POST /v1/streams`` (also the AI SDK chat route's)."""
    known = request.app[GENERATORS]
    if create.generator not in known:
        raise Problem(422, f"unknown generator {create.generator!r}; known: "
                      f"{', '.join(sorted(known))}", field="/generator")
    assert services.creator is not None
    assigned = assign_stream(services.settings.gateway.experiments, identity, create.options)
    async with active_stream(services.limits, identity) as slot:
        async with _deadline(services):
            info = await services.creator.create(
                generator=create.generator, query=create.query,
                options=assigned.options, with_job=create.generator != EXTERNAL,
                tenant=identity.tenant, owner=identity.owner,
                priority=services.settings.limits.tiers[identity.tier].priority,
                context=create.context, experiments=assigned.variants,
                cache=CachePrefs.from_json(create.cache))
        slot.bind(info.stream_id)
    logcontext.bind(stream=info.stream_id, partition=info.partition)
    stream_id = info.stream_id
    tracing.annotate(stream=stream_id, tenant=identity.tenant, generator=create.generator,
                     partition=info.partition, offset=info.first_offset)
    session_id = create.context.session_id if create.context is not None else None
    if session_id and services.user_sessions is not None:
        await services.user_sessions.remember(identity, session_id, stream_id,
                                              info.created_at)
    services.metrics.created.labels(create.generator).inc()
    request.app[AUDIT].record(request, "create", outcome="ok", stream=stream_id,
                              generator=create.generator)
    return info


async def stream_status(request: web.Request) -> web.Response:
    identity, stream_id = await _caller(request, auth.READ)
    services = await _ready(request)
    assert services.lookup is not None
    found = await _find(request, services, stream_id, identity)
    # Read-your-writes: counts everything written to the stream before this request.
    info = await services.lookup.current(found)
    return _json(await _describe(services, info, found.earliest))


def position_of(request: web.Request) -> EventId | None:
    """The client's position: the ``Last-Event-ID`` header, else ``?last_event_id=``; a
    malformed one raises ``InvalidEventId`` (400 / 4400)."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    return parse_event_id(raw.strip()) if raw.strip() else None


async def session_for(request: web.Request, transport: Transport = streaming.SSE, *,
                      heartbeat_s: float | None = None,
                      idle_timeout_s: float | None = None,
                      ) -> tuple[streaming.Session, EventId | None]:
    """The session that serves this request's stream over ``transport`` (SSE, WebSocket,
    long-poll: the same checks in the same order), and the position to serve it from.
    Raises the caller's problems (401, 403, 404, 400...). ``heartbeat_s`` and
    ``idle_timeout_s`` override the gateway's settings."""
    identity, stream_id = await _caller(request, auth.READ)
    await _ready(request)
    position = position_of(request)
    session = await session_of(request, identity, stream_id, transport,
                               heartbeat_s=heartbeat_s, idle_timeout_s=idle_timeout_s)
    return session, position


async def session_of(request: web.Request, identity: Identity, stream_id: str,
                     transport: Transport, *, heartbeat_s: float | None = None,
                     idle_timeout_s: float | None = None) -> streaming.Session:
    """:func:`session_for` for a stream the handler named itself (``_caller`` has
    checked ``identity`` against the id, or the handler made the stream)."""
    services = await _ready(request)
    if not request["tidemark.id_decides"]:
        # An id without tags: the stream index says whose stream it is.
        await _find(request, services, stream_id, identity, allow_pending=True)
    assert services.hub is not None and services.reader is not None
    assert services.lookup is not None
    gw = services.settings.gateway
    prefs = Delivery.requested(request.query, interval_s=gw.batch_interval_ms / 1000)
    session = streaming.Session(
        request=request, stream_id=stream_id, lookup=services.lookup, hub=services.hub,
        reader=services.reader, metrics=services.metrics,
        heartbeat_s=gw.heartbeat_s if heartbeat_s is None else heartbeat_s,
        retry_ms=gw.retry_ms, max_response_s=gw.max_response_s,
        idle_timeout_s=gw.idle_timeout_s if idle_timeout_s is None else idle_timeout_s,
        gateway_id=services.instance, closing=services.closing,
        registry=services.sessions, prefs=prefs, transport=transport,
        experiments=gw.experiments, recorder=services.recorder,
        lag_coalesce=gw.lag_coalesce, slow_socket_s=gw.slow_socket_s,
        send_buffer_bytes=gw.client_send_buffer_bytes,
        listener_bounded=services.listener_send_buffer)
    return session


async def stream_events(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    session, position = await session_for(request, streaming.sse_transport(
        services.codings, request.headers.get("Accept-Encoding")))
    if not tracing.enabled():
        # No span to open: no context manager either (a reconnect storm is thousands
        # of these at once, each holding its frames for the response's lifetime).
        return await streaming.serve(session, position)
    async with tracing.delivery_span(request, services, session.stream_id,
                                     position) as span:
        response = await streaming.serve(session, position)
        tracing.delivered(span, session.info, session.cursor.written, response)
        return response


@tracing.server_span(tracing.PUBLISH)
async def publish(request: web.Request) -> web.StreamResponse:
    identity, stream_id = await _caller(request, auth.PUBLISH)
    services = await _ready(request)
    body = await _json_body(request)
    inputs = request.app[VALIDATORS].publish_request(body)
    found = await _find(request, services, stream_id, identity)
    assert services.lookup is not None
    generator = await services.lookup.generator(found)
    if generator != EXTERNAL:
        raise Problem(409, f"stream {stream_id} is written by the {generator!r} "
                      "generator; only external streams accept published events")
    info = _whose(request, identity, found.info).evolve(generator=EXTERNAL)
    assert services.appender is not None and services.hub is not None
    if services.limits is not None:
        await services.limits.publish(identity, len(await request.read()))
    async with _deadline(services):
        result = await services.appender.append(
            info, [Draft(i.type, i.data, i.seq) for i in inputs])
    services.metrics.published.inc(len(result.written))
    tracing.annotate(stream=stream_id, tenant=identity.tenant, partition=info.partition,
                     events=len(result.written), last_seq=result.last_seq)
    request.app[AUDIT].record(request, "publish", outcome="ok", stream=stream_id,
                              events=len(result.written), duplicates=result.duplicates)
    epoch = await services.hub.epoch(info.topic)
    return _json({
        "accepted": len(inputs),
        "written": [{"seq": seq, "id": encode_event_id(epoch, info.partition, offset, seq)}
                    for seq, offset in result.written],
        "duplicates": result.duplicates,
        "last_seq": result.last_seq,
        "ended": result.terminal is not None,
    })


async def cancel(request: web.Request) -> web.Response:
    identity, stream_id = await _caller(request, auth.CANCEL)
    answer, status = await cancel_stream(request, identity, stream_id)
    return _json(answer, status=status)


async def cancel_stream(request: web.Request, identity: Identity, stream_id: str,
                        ) -> tuple[dict[str, Any], int]:
    """Ask the stream's producer to stop (the caller holds ``streams:cancel``): its
    answer and status, 202, or 200 for a stream that had finished. Also the
    WebSocket's ``{"op": "cancel"}``."""
    services = await _ready(request)
    found = await _find(request, services, stream_id, identity)
    assert services.lookup is not None
    info = await services.lookup.current(found)
    if info.finished:
        return {"stream_id": stream_id, "status": info.status}, 200
    assert services.producer is not None and services.appender is not None
    async with _deadline(services):
        if info.generator == EXTERNAL:
            await services.appender.append(
                _whose(request, identity, info),
                [Draft(events.CANCELLED, {"reason": "cancelled by request"})])
        else:
            # The cancel goes to the job's partition, so the owning worker sees it.
            await send_cancel(services.producer, info.namespace, stream_id,
                              partitions=services.settings.log.partitions)
    request.app[AUDIT].record(request, "cancel", outcome="ok", stream=stream_id)
    return {"stream_id": stream_id, "status": "cancelling"}, 202


async def list_streams(request: web.Request) -> web.Response:
    """``GET /v1/streams?session=<id>[&limit=n][&cursor=c]``: the caller's own streams
    of one session, newest first."""
    identity = await _authorize(request, auth.READ)
    if identity.stream is not None:
        raise Forbidden("a read token reads its one stream only")
    session_id = request.query.get("session", "")
    if not session_id:
        raise Problem(400, "name the session: GET /v1/streams?session=<sessionId>")
    raw_limit = request.query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise Problem(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    try:
        cursor = decode_cursor(request.query["cursor"]) if "cursor" in request.query else None
    except BadCursor:
        raise Problem(400, "cursor is not one this API gave out") from None
    sessions = request.app[SERVICES].user_sessions
    if sessions is None:
        raise Problem(503, "session lists are off: TIDEMARK_REDIS_URL is not set")
    page = await sessions.page(identity, session_id, limit=int(raw_limit), cursor=cursor)
    return _json({"streams": [{"stream_id": e.stream_id, "created_at": e.created_at,
                               "status_url": f"/v1/streams/{e.stream_id}",
                               "events_url": f"/v1/streams/{e.stream_id}/events"}
                              for e in page.entries],
                  "next_cursor": page.next_cursor})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    hub = services.hub
    if services.failure is not None:
        raise Problem(503, f"gateway services failed: {services.failure}")
    if not services.ready.is_set() or hub is None or not hub.ready:
        raise Problem(503, "waiting for Kafka: the hub is not assigned yet")
    if not services.kafka_ok:
        raise Problem(503, "Kafka is not answering")
    for check in request.app[READY_CHECKS]:
        reason = check()
        if reason is not None:
            raise Problem(503, reason)
    return _json({"status": "ready", "partitions": len(hub.tails),
                  "subscribers": hub.subscriber_count})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    m = services.metrics
    if services.hub is not None:
        m.subscribers.set(services.hub.subscriber_count)
    if services.lookup is not None:
        m.index_streams.set(services.lookup.legacy_streams)
        m.known_streams.set(len(services.lookup))
    return web.Response(body=m.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


_INDEX_HTML: Final = resources.files("gateway").joinpath("static", "index.html")
#: The demo page's files, at ``GET /demo/assets/{name}``: the JavaScript SDK's browser
#: bundle, a copy of ``clients/js/dist/tidemark-client.browser.js`` (a test checks it).
DEMO_ASSETS: Final = {
    "tidemark-client.js": ("vendor/tidemark-client.browser.js", "text/javascript"),
}


async def demo_page(request: web.Request) -> web.Response:
    return web.Response(body=_INDEX_HTML.read_bytes(), content_type="text/html",
                        charset="utf-8")


def add_routes(app: web.Application) -> None:
    app[VALIDATORS] = Validators()
    app[GENERATORS] = accepted_generators(app[SERVICES].settings)
    tracing.install(app)
    # The SSE route first: the router tries routes in order, and a reconnect storm is
    # thousands of these at once.
    app.router.add_get("/v1/streams/{id}/events", stream_events)
    app.router.add_get("/", demo_page)
    app.router.add_get("/demo/assets/{name}", Assets(DEMO_ASSETS, "the demo page").serve)
    app.router.add_post("/v1/streams", create_stream)
    app.router.add_get("/v1/streams", list_streams)
    app.router.add_get("/v1/streams/{id}", stream_status)
    app.router.add_post("/v1/streams/{id}/events", publish)
    app.router.add_post("/v1/streams/{id}/cancel", cancel)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
