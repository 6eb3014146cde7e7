"""OpenTelemetry traces: set-up, and W3C trace context in Kafka and HTTP headers.

Off by default. :func:`setup` turns tracing on for the process when
:class:`eventlog.settings.TraceSettings` says so (an OTLP endpoint is set, and neither
``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``): an SDK tracer provider
(sampler from ``OTEL_TRACES_SAMPLER``, resource from ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_SERVICE_NAME``) with a :class:`BatchSpanProcessor` (bounded queue, spans beyond it
are dropped; ``OTEL_BSP_*``) and the standard OTLP/HTTP exporter, installed as the global
provider, so ``opentelemetry.trace.get_current_span()`` names the span a log line belongs
to. :func:`shutdown` flushes it when the process ends.

While tracing is off, :func:`enabled` is False: callers start no spans and extract
nothing, and :func:`headers` adds no ``traceparent`` because no span is current. A
process that configured the OpenTelemetry SDK itself (a backend service using the
publisher SDK) gets its current span's context into the records it writes all the same:
:func:`headers` reads only the current context, not this module's switch.

The switch is one per process, like OpenTelemetry's own global tracer provider.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventlog.settings import TraceSettings
from schemas.events import HEADER_TRACEPARENT

log = logging.getLogger(__name__)

#: The instrumentation scope of every Tidemark span.
SCOPE: Final = "tidemark"
HEADER_TRACESTATE: Final = "tracestate"
#: The headers of W3C trace context (on Kafka records and HTTP requests).
TRACE_HEADERS: Final = frozenset({HEADER_TRACEPARENT, HEADER_TRACESTATE})
#: What :func:`headers` gives when there is no trace context: nothing to add.
NO_HEADERS: Final[tuple[tuple[str, bytes], ...]] = ()

# Span attribute names (shared by gateway and workers; see docs/operations.md).
STREAM_ID: Final = "tidemark.stream.id"
TENANT: Final = "tidemark.tenant"
GENERATOR: Final = "tidemark.generator"
PARTITION: Final = "messaging.destination.partition.id"
OFFSET: Final = "messaging.kafka.offset"

_W3C: Final = TraceContextTextMapPropagator()


class _Switch:
    """This process's tracing state (see the module docstring)."""

    enabled = False
    provider: object | None = None


_switch = _Switch()


def enabled() -> bool:
    """Whether this process records spans (:func:`setup` turned it on)."""
    return _switch.enabled


def tracer() -> trace.Tracer:
    return trace.get_tracer(SCOPE)


def setup(settings: TraceSettings, *, service_name: str) -> bool:
    """Turn tracing on if ``settings`` say so; whether it is on. ``service_name`` is the
    default of ``service.name`` (``OTEL_SERVICE_NAME`` wins)."""
    if not settings.enabled or _switch.enabled:
        return _switch.enabled
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: settings.service_name or service_name})
    # shutdown_on_exit: the SDK's own atexit hook also flushes a process that ends
    # without calling shutdown().
    provider = TracerProvider(resource=resource, shutdown_on_exit=True)
    # The endpoint is given explicitly (TraceSettings resolves the two variables); the
    # exporter reads its other OTEL_EXPORTER_OTLP_* variables (headers, timeout) itself.
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=settings.spans_url)))
    trace.set_tracer_provider(provider)
    _switch.provider = provider
    _switch.enabled = True
    log.info("tracing on: spans of %s go to %s", resource.attributes.get(SERVICE_NAME),
             settings.spans_url)
    return True


def shutdown() -> None:
    """Export what is queued and stop (blocking: call it off the event loop, at exit)."""
    provider = _switch.provider
    _switch.enabled = False
    _switch.provider = None
    if provider is not None:
        from opentelemetry.sdk.trace import TracerProvider

        assert isinstance(provider, TracerProvider)
        provider.force_flush()
        provider.shutdown()


# --- W3C trace context ------------------------------------------------------------------


def headers(span: Span | None = None) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers carrying ``span``'s context (default: the current span's):
    ``traceparent`` and, if it has one, ``tracestate``; none without a valid context."""
    span = trace.get_current_span() if span is None else span
    if not span.get_span_context().is_valid:
        return NO_HEADERS
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return tuple((name, value.encode()) for name, value in carrier.items())


def kafka_context(raw: Iterable[tuple[str, bytes]]) -> Context | None:
    """The remote trace context in a record's headers, or None."""
    carrier = {name: value.decode("ascii", "replace") for name, value in raw
               if name in TRACE_HEADERS and value is not None}
    return _valid(carrier)


def http_context(raw: Mapping[str, str]) -> Context | None:
    """The trace context of an HTTP request's ``traceparent``/``tracestate``, or None."""
    traceparent = raw.get(HEADER_TRACEPARENT)
    if traceparent is None:
        return None
    carrier = {HEADER_TRACEPARENT: traceparent}
    state = raw.get(HEADER_TRACESTATE)
    if state is not None:
        carrier[HEADER_TRACESTATE] = state
    return _valid(carrier)


def span_context(ctx: Context | None) -> SpanContext | None:
    """The span context a :func:`kafka_context`/:func:`http_context` result holds."""
    if ctx is None:
        return None
    return trace.get_current_span(ctx).get_span_context()


def trace_headers_of(raw: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Only the W3C trace-context headers of a record's headers."""
    return tuple((name, value) for name, value in raw
                 if name in TRACE_HEADERS and value is not None)


def _valid(carrier: dict[str, str]) -> Context | None:
    if HEADER_TRACEPARENT not in carrier:
        return None
    ctx = _W3C.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None
