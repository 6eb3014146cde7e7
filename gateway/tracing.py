"""The gateway's spans: create, publish, and each SSE delivery or resume of a stream.

- ``tidemark.create`` (``POST /v1/streams``) and ``tidemark.publish``
  (``POST /v1/streams/{id}/events``) are server spans that continue the request's own
  ``traceparent`` when it has one. They are current while the handler runs, so the
  records it writes carry their context (``eventlog.tracing.headers``): a stream's trace
  starts at its create span, and published events continue the publisher's trace.
- ``tidemark.deliver`` (a ``GET .../events`` without a position: the stream from its
  start) and ``tidemark.resume`` (with ``Last-Event-ID`` or ``?last_event_id=``) are
  server spans over the whole SSE response. Their parent is the request's own
  ``traceparent`` if it has one, with a link to the stream's trace; else the span that
  created the stream, read from the ``traceparent`` of the stream's first record. So
  without client tracing every delivery and resume shows up in the stream's own trace,
  and with it the client's trace stays whole and still points at the stream's.

With tracing off (``eventlog.tracing.enabled()`` False) nothing here starts a span or
reads anything. With it on, the first delivery of a stream through a gateway costs one
read of the stream's first record from Kafka (after the request is authorized), kept in
a bounded cache.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from eventlog import tracing
from eventlog.index import StreamInfo
from eventlog.locate import first_record
from gateway.problems import problem_for
from gateway.services import Services
from schemas.errors import TidemarkError
from schemas.eventid import EventId
from schemas.events import HEADER_TRACEPARENT

CREATE: Final = "tidemark.create"
PUBLISH: Final = "tidemark.publish"
DELIVER: Final = "tidemark.deliver"
RESUME: Final = "tidemark.resume"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Whether this process records spans (``eventlog.tracing.enabled``).
enabled: Final = tracing.enabled


class StreamTraces:
    """Stream id -> the trace context its first record carries (None: none), for a
    bounded number of recently served streams."""

    def __init__(self, max_streams: int = 10_000) -> None:
        self._max = max_streams
        self._known: OrderedDict[str, Context | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    async def of(self, services: Services, stream_id: str) -> Context | None:
        if stream_id in self._known:
            self._known.move_to_end(stream_id)
            return self._known[stream_id]
        if services.lookup is None or services.reader is None:
            return None
        try:
            found = await services.lookup.find(stream_id, allow_pending=True)
            if found.pending or found.earliest != found.info.first_offset:
                return None  # not readable yet, or its first event is gone: not cached
            info = found.info
            rec = await first_record(services.reader, info.topic, info.partition,
                                     stream_id.encode(), start=found.earliest,
                                     until=found.earliest + 1)
        except (TidemarkError, KafkaError):
            return None  # the request itself answers this error
        ctx = None
        if rec is not None and rec.seq == 0 and rec.traceparent is not None:
            ctx = tracing.kafka_context([(HEADER_TRACEPARENT, rec.traceparent.encode())])
        self._known[stream_id] = ctx
        while len(self._known) > self._max:
            self._known.popitem(last=False)
        return ctx


STREAM_TRACES = web.AppKey("stream_traces", StreamTraces)


def install(app: web.Application) -> None:
    app[STREAM_TRACES] = StreamTraces()


def server_span(name: str) -> Callable[[Handler], Handler]:
    """A handler whose request is the server span ``name`` (continuing the request's
    ``traceparent``), current while it runs; a plain call with tracing off."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def traced(request: web.Request) -> web.StreamResponse:
            if not tracing.enabled():
                return await handler(request)
            with tracing.tracer().start_as_current_span(
                    name, context=tracing.http_context(request.headers),
                    kind=SpanKind.SERVER, record_exception=False,
                    set_status_on_exception=False,
                    attributes=_http_attributes(request)) as span:
                return await _answered(span, handler, request)
        return traced
    return wrap


@contextlib.asynccontextmanager
async def delivery_span(request: web.Request, services: Services, stream_id: str,
                        position: EventId | None) -> AsyncIterator[Span | None]:
    """The ``tidemark.deliver`` or ``tidemark.resume`` span of an SSE request, current
    in the block (None with tracing off); see the module docstring for its parent."""
    if not tracing.enabled():
        yield None
        return
    stream_ctx = await request.app[STREAM_TRACES].of(services, stream_id)
    own = tracing.http_context(request.headers)
    links: list[Link] = []
    stream_span = tracing.span_context(stream_ctx)
    if own is not None and stream_span is not None:
        links.append(Link(stream_span, {"tidemark.link": "stream"}))
    attributes: dict[str, Any] = {**_http_attributes(request), tracing.STREAM_ID: stream_id}
    if position is not None:
        attributes.update({tracing.PARTITION: str(position.partition),
                           "tidemark.resume.offset": position.offset})
    with tracing.tracer().start_as_current_span(
            DELIVER if position is None else RESUME,
            context=own if own is not None else stream_ctx, kind=SpanKind.SERVER,
            links=links, attributes=attributes, record_exception=False,
            set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc)
            raise


def delivered(span: Span | None, info: StreamInfo | None, events: int,
              response: web.StreamResponse) -> None:
    """What an SSE response delivered, on its span."""
    if span is None:
        return
    if info is not None:
        span.set_attributes({tracing.PARTITION: str(info.partition), "tidemark.events": events})
    span.set_attribute("http.response.status_code", response.status)


def annotate(**attributes: str | int) -> None:
    """Attributes of the current span (``stream``, ``tenant``, ``generator``,
    ``partition``, ``offset``, or any ``tidemark.*`` name); nothing with tracing off."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    names = {"stream": tracing.STREAM_ID, "tenant": tracing.TENANT,
             "generator": tracing.GENERATOR, "offset": tracing.OFFSET}
    for key, value in attributes.items():
        if key == "partition":
            span.set_attribute(tracing.PARTITION, str(value))
        else:
            span.set_attribute(names.get(key, f"tidemark.{key}"), value)


def _http_attributes(request: web.Request) -> dict[str, Any]:
    resource = request.match_info.route.resource
    return {"http.request.method": request.method,
            "http.route": resource.canonical if resource is not None else request.path}


async def _answered(span: Span, handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        response = await handler(request)
    except BaseException as exc:
        _failed(span, exc)
        raise
    span.set_attribute("http.response.status_code", response.status)
    return response


def _failed(span: Span, exc: BaseException) -> None:
    """The status an error answers with (5xx: the span failed)."""
    if isinstance(exc, web.HTTPException):
        status = exc.status
    elif isinstance(exc, TidemarkError):
        status = problem_for(exc).status
    elif isinstance(exc, Exception):
        status = 500
    else:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__name__))
