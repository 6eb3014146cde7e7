"""Talking back: a client's input into its stream, and cancel, over HTTP
(``POST /v1/streams/{id}/input``) and over the WebSocket (``{"op": ...}`` messages).

An input is an ``input`` event (``schemas/json/input.json``; its ``data`` is what the
client sent, at most ``TIDEMARK_INPUT_MAX_BYTES`` of JSON) appended through the same
path as the publish route (``eventlog.streams.Appender``): in order, with the next seq
and an id like any other event, seen by every follower on every transport. Only
``external`` streams take input for now: a worker-generated stream's seqs belong to its
worker, which does not read inputs yet (the generator side is still to come), so a
gateway appending there would collide with the worker's next seq; those answer 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from eventlog.streams import Draft
from gateway import auth
from gateway.audit import AUDIT
from gateway.auth import Identity
from gateway.problems import Problem
from gateway.routes import (
    EXTERNAL,
    VALIDATORS,
    _caller,
    _deadline,
    _find,
    _json,
    _json_body,
    _ready,
    cancel_stream,
)
from schemas import events
from schemas.eventid import encode_event_id


async def append_input(request: web.Request, identity: Identity, stream_id: str,
                       body: Any) -> dict[str, Any]:
    """Validate ``body`` (``{"data": {...}}``) and append it to the caller's stream as an
    ``input`` event (``identity`` holds ``streams:publish``); its seq and id."""
    request.app[VALIDATORS].check("input_request", body)
    services = await _ready(request)
    size = len(orjson.dumps(body["data"]))
    limit = services.settings.gateway.input_max_bytes
    if size > limit:
        raise Problem(413, f"an input's data is at most {limit} bytes of JSON, not {size}")
    found = await _find(request, services, stream_id, identity)
    assert services.lookup is not None and services.appender is not None
    generator = await services.lookup.generator(found)
    if generator != EXTERNAL:
        raise Problem(409, f"stream {stream_id} is written by the {generator!r} generator, "
                      "which does not take input yet; only external streams do")
    if services.limits is not None:
        await services.limits.publish(identity, size)
    async with _deadline(services):
        result = await services.appender.append(found.info, [Draft(events.INPUT, body["data"])])
    services.metrics.published.inc(len(result.written))
    request.app[AUDIT].record(request, "input", outcome="ok", stream=stream_id)
    assert services.hub is not None
    epoch = await services.hub.epoch(found.info.topic)
    seq, offset = result.written[0]
    return {"seq": seq, "id": encode_event_id(epoch, found.info.partition, offset)}


async def post_input(request: web.Request) -> web.Response:
    """``POST /v1/streams/{id}/input``: 200 ``{"seq", "id"}`` of the input event."""
    identity, stream_id = await _caller(request, auth.PUBLISH)
    body = await _json_body(request)
    return _json(await append_input(request, identity, stream_id, body))


def op_handler(text: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler for one message a WebSocket client sent, ``{"op": "input", "data":
    {...}}`` or ``{"op": "cancel"}``, checked with the connection's token (its scopes per
    op). It answers the acknowledgement to send back as a JSON response (the WebSocket
    runs it through the problem middleware, so a refusal is the problem HTTP would give).
    """
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, f"a message is a JSON object: {exc}") from exc
        op = message.get("op") if isinstance(message, dict) else None
        if op == "input":
            identity, stream_id = await _caller(request, auth.PUBLISH)
            body = {k: v for k, v in message.items() if k != "op"}
            written = await append_input(request, identity, stream_id, body)
            return _json({"op": "ack", "of": "input", **written})
        if op == "cancel":
            identity, stream_id = await _caller(request, auth.CANCEL)
            answer, _ = await cancel_stream(request, identity, stream_id)
            return _json({"op": "ack", "of": "cancel", **answer})
        raise Problem(400, 'unknown op: send {"op": "input", "data": {...}} or '
                      '{"op": "cancel"}')
    return handle
