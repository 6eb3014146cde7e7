"""Talking back: a client's input into its stream, and cancel, over HTTP
(``POST /v1/streams/{id}/input``) and over the WebSocket (``{"op": ...}`` messages).

An input is an ``input`` event (``schemas/json/input.json``; its ``data`` is what the
client sent, at most ``TIDEMARK_INPUT_MAX_BYTES`` of JSON): in order, with the next seq
and an id like any other event, seen by every follower on every transport.

- An ``external`` stream: appended through the publish route's path
  (``eventlog.streams.Appender``).
- A worker-generated stream, whose seqs belong to its worker: the gateway sends an
  ``input`` control record (``eventlog.jobs.InputRecord``, with a new input id) to the
  stream's jobs partition, like a cancel; the owning worker writes the event (carrying
  the input id in its ``tm-input`` header) and hands it to its generator. The gateway
  answers once its hub has read that event (``gateway.inputs``), at most
  ``TIDEMARK_INPUT_WAIT_SECONDS`` later: then 504, the input may still be written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from eventlog import index
from eventlog.errors import StreamEnded
from eventlog.jobs import InputRecord, send_input
from eventlog.streams import Draft, now_ms
from gateway import auth
from gateway.audit import AUDIT
from gateway.auth import Identity
from gateway.inputs import Written
from gateway.lookup import Found
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
from gateway.services import Services
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
    if services.limits is not None:
        await services.limits.publish(identity, size)
    if generator != EXTERNAL:
        written = await _through_worker(services, identity, found, body["data"])
        services.metrics.published.inc()
        request.app[AUDIT].record(request, "input", outcome="ok", stream=stream_id)
        return written._asdict()
    async with _deadline(services):
        result = await services.appender.append(found.info, [Draft(events.INPUT, body["data"])])
    services.metrics.published.inc(len(result.written))
    request.app[AUDIT].record(request, "input", outcome="ok", stream=stream_id)
    assert services.hub is not None
    epoch = await services.hub.epoch(found.info.topic)
    seq, offset = result.written[0]
    return {"seq": seq, "id": encode_event_id(epoch, found.info.partition, offset, seq)}


async def _through_worker(services: Services, identity: Identity, found: Found,
                          data: dict[str, Any]) -> Written:
    """Hand ``data`` to the worker of a generated stream; where its event is, once the
    hub has read it."""
    assert services.lookup is not None and services.hub is not None
    assert services.producer is not None
    stream_id = found.info.stream_id
    record = InputRecord(stream_id=stream_id, input_id=uuid.uuid4().hex, data=data,
                         tenant=identity.tenant, sub=identity.sub, ts=now_ms())
    await services.hub.attach(found.info.topic)
    # Expected before the status is read: a terminal event after it fails the wait.
    with services.inputs.expect(stream_id, record.input_id) as written:
        info = await services.lookup.current(found)
        if info.finished:
            raise StreamEnded(f"stream {stream_id} has ended ({info.status}): it takes no "
                              "more input")
        if info.status == index.QUEUED:
            # No worker has started its job: it may wait for a slot for long.
            raise Problem(409, f"stream {stream_id} has not started yet (queued): send "
                          "input once its worker runs it (its first events have come)")
        async with _deadline(services):
            await send_input(services.producer, info.namespace, record,
                             partitions=services.settings.log.partitions)
        wait_s = services.settings.gateway.input_wait_s
        try:
            return await asyncio.wait_for(written, wait_s)
        except TimeoutError:
            raise Problem(504, f"the input went to stream {stream_id}'s worker but was not in "
                          f"the stream after {wait_s:g} s (no worker has the stream now?); "
                          "it may still arrive: follow the stream",
                          input_id=record.input_id) from None


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
