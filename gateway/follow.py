"""What the WebSocket and long-poll routes share with the SSE route before the first
event: the caller (scope ``streams:read``, or the stream's read token), the position
(``Last-Event-ID`` header, else ``?last_event_id=``), and a
:class:`gateway.streaming.Session` for :func:`gateway.streaming.serve` with the
route's transport. The same checks, in the same order, as ``GET /v1/streams/{id}/events``.
"""

from __future__ import annotations

from aiohttp import web

from gateway import auth, streaming
from gateway.delivery import Delivery
from gateway.routes import _caller, _find, _ready
from gateway.transport import Transport
from schemas.eventid import EventId, parse_event_id


def position_of(request: web.Request) -> EventId | None:
    """The client's position, as on SSE: the header wins over the query parameter;
    a malformed one raises ``InvalidEventId`` (400 / 4400)."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    return parse_event_id(raw.strip()) if raw.strip() else None


async def session_for(request: web.Request, transport: Transport, *,
                      heartbeat_s: float | None = None,
                      idle_timeout_s: float | None = None,
                      ) -> tuple[streaming.Session, EventId | None]:
    """The session that serves this request's stream over ``transport``, and the
    position to serve it from. Raises what the SSE route raises (401, 403, 404, 400...).
    ``heartbeat_s`` and ``idle_timeout_s`` override the gateway's settings."""
    identity, stream_id = await _caller(request, auth.READ)
    services = await _ready(request)
    position = position_of(request)
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
        experiments=gw.experiments, recorder=services.recorder)
    return session, position
