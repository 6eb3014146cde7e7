"""Tracing's switch (the OTEL_* rule) and W3C trace context in Kafka and HTTP headers."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from eventlog import tracing
from eventlog.errors import ConfigError
from eventlog.index import StreamInfo
from eventlog.jobs import Job, parse_job_record
from eventlog.records import LogRecord
from eventlog.settings import load_trace_settings, otel_env_names

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),  # empty is unset
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "OTLP"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, False),  # no endpoint: nowhere to send to
])
def test_tracing_is_on_only_with_an_endpoint_and_not_switched_off(
        environ: dict[str, str], on: bool) -> None:
    assert load_trace_settings(environ).enabled is on


def test_spans_go_to_the_traces_endpoint_or_the_base_one_plus_v1_traces() -> None:
    assert load_trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT + "/"}).spans_url \
        == ENDPOINT + "/v1/traces"
    both = load_trace_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:1/x"})
    assert both.spans_url == "http://h:1/x"


def test_an_exporter_tidemark_does_not_ship_is_refused() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        load_trace_settings({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otel_names_are_listed_with_help() -> None:
    names = otel_env_names()
    assert set(names) == {"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
                          "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                          "OTEL_SERVICE_NAME"}
    assert all(text.strip() for text in names.values())


def test_no_current_span_no_headers() -> None:
    assert not tracing.enabled()
    assert tracing.headers() == ()
    assert tracing.kafka_context([]) is None
    assert tracing.http_context({}) is None


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
                                 "00-abc-def-01"])
def test_an_invalid_traceparent_is_no_context(bad: str) -> None:
    assert tracing.http_context({"traceparent": bad}) is None
    assert tracing.kafka_context([("traceparent", bad.encode())]) is None


def test_a_span_goes_into_kafka_headers_and_comes_back_out() -> None:
    # A provider of the test's own: the global one (and tracing's switch) stay untouched.
    span = TracerProvider().get_tracer("test").start_span("work")
    try:
        ctx = span.get_span_context()
        headers = tracing.headers(span)
        assert [name for name, _ in headers] == ["traceparent"]
        assert headers[0][1] == \
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()
        back = tracing.span_context(tracing.kafka_context(
            [("tm-type", b"status"), *headers, ("tm-seq", b"0")]))
        assert back is not None and back.is_remote
        assert (back.trace_id, back.span_id) == (ctx.trace_id, ctx.span_id)
        http = tracing.span_context(tracing.http_context({"traceparent": headers[0][1].decode()}))
        assert http is not None and (http.trace_id, http.span_id) == (ctx.trace_id, ctx.span_id)
        # The current span is what headers() writes by default (a publisher's own span).
        with trace.use_span(span):
            assert tracing.headers() == headers
    finally:
        span.end()


def test_a_job_record_keeps_only_its_trace_headers() -> None:
    info = StreamInfo(stream_id="s1", namespace="default", topic="tidemark.default.events",
                      partition=0, first_offset=0, generator="demo", status="queued",
                      created_at=1, updated_at=1)
    job = Job(stream=info, query="q")
    tp = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    parsed = parse_job_record(job.to_json(), [("other", b"x"), ("traceparent", tp)])
    assert isinstance(parsed, Job) and parsed.trace == (("traceparent", tp),)
    assert parse_job_record(job.to_json()) == job  # no headers: no trace


def test_a_log_record_reads_its_traceparent() -> None:
    def record(*headers: tuple[str, bytes]) -> LogRecord | None:
        return LogRecord.from_consumer(ConsumerRecord(
            topic="t", partition=0, offset=7, timestamp=1, timestamp_type=0, key=b"k",
            value=b"{}", checksum=None, serialized_key_size=1, serialized_value_size=2,
            headers=[("tm-type", b"status"), ("tm-seq", b"0"), *headers]))

    traced = record(("traceparent", b"00-ab"))
    assert traced is not None and traced.traceparent == "00-ab"
    plain = record()
    assert plain is not None and plain.traceparent is None
