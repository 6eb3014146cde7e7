"""Traces across real processes: a gateway and a worker export spans over OTLP/HTTP to a
receiver this test runs, and the Kafka records carry W3C ``traceparent`` headers.

The receiver is an aiohttp server on loopback that accepts ``POST /v1/traces`` and
decodes ``ExportTraceServiceRequest`` with ``opentelemetry-proto``: what any OTLP
collector would see.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider

from eventlog.settings import load_settings
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create
from tests.e2e.test_takeover import taken_over
from tests.procs import free_port
from workers.publisher import Publisher

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf", request.content_type
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        self.requests += 1
        for resource_spans in body.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    self.spans.append(Span(
                        service=str(resource.get("service.name")), name=s.name,
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(), kind=s.kind,
                        attributes=_attributes(s.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links]))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str, stream: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.name == name and (
            stream is None or s.attributes.get("tidemark.stream.id") == stream)]

    async def wait_for(self, name: str, stream: str, count: int = 1,
                       timeout: float = 30.0) -> list[Span]:
        for _ in range(int(timeout / 0.1)):
            got = self.named(name, stream)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.1)
        raise AssertionError(f"{len(self.named(name, stream))} {name} spans of {stream} "
                             f"in {timeout}s; got {[s.name for s in self.spans]}")


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", got.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    got.url = f"http://127.0.0.1:{port}"
    try:
        yield got
    finally:
        await runner.cleanup()


def traced(cluster: Cluster, receiver: Receiver) -> None:
    """Gateways and workers started from now on export spans to ``receiver``."""
    for name in [k for k in cluster.env if k.startswith("OTEL_")]:
        del cluster.env[name]
    cluster.env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                       OTEL_BSP_SCHEDULE_DELAY="100")


def caller() -> tuple[str, str, str]:
    """A caller's trace: (trace id, span id, its traceparent header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: bytes | str) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    version, trace_id, span_id, _flags = text.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16, text
    return trace_id, span_id


async def records_of(cluster: Cluster, stream_id: str) -> list[tuple[int, dict[str, bytes]]]:
    """(seq, headers) of each committed record of the stream, read with a real consumer."""
    topic = f"tidemark.{cluster.namespace}.events"
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(int(cluster.env["TIDEMARK_PARTITIONS"]))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[int, dict[str, bytes]]] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    if rec.key == stream_id.encode():
                        headers = dict(rec.headers)
                        out.append((int(headers["tm-seq"]), headers))
        return out
    finally:
        await consumer.stop()


async def test_one_trace_from_create_through_worker_to_delivery_and_resume(
        receiver: Receiver, cluster: Cluster, http: aiohttp.ClientSession) -> None:
    traced(cluster, receiver)
    cluster.worker()
    base = await cluster.gateway()
    trace_id, caller_span, traceparent = caller()

    async with http.post(f"{base}/v1/streams", headers={"traceparent": traceparent},
                         json={"query": "traced?",
                               "options": {"tokens": 12, "tokens_per_second": 60}}) as resp:
        assert resp.status == 201, await resp.text()
        sid = (await resp.json())["stream_id"]
    url = f"{base}/v1/streams/{sid}/events"
    followed = await sse_client.read(http, url)
    assert followed.stream_events[-1].event == "result"
    assert_contiguous(followed.stream_events)
    middle = followed.stream_events[5]
    resumed = await sse_client.read(http, url, last_event_id=middle.id)
    assert [e.seq for e in resumed.stream_events] == [
        e.seq for e in followed.stream_events[6:]]
    # A resume from a traced client: its own trace is the parent, linked to the stream's.
    client_trace, client_span, client_parent = caller()
    linked = await sse_client.read(http, url, last_event_id=middle.id,
                                   headers={"traceparent": client_parent})
    assert linked.stream_events[-1].event == "result"

    [create_span] = await receiver.wait_for("tidemark.create", sid)
    [generate] = await receiver.wait_for("tidemark.generate", sid)
    [deliver] = await receiver.wait_for("tidemark.deliver", sid)
    resumes = await receiver.wait_for("tidemark.resume", sid, count=2)
    transactions = receiver.named("tidemark.transaction", sid)

    # Every span of the stream is in the caller's trace, but the client-traced resume.
    [own_resume] = [s for s in resumes if s.trace_id == client_trace]
    [plain_resume] = [s for s in resumes if s is not own_resume]
    stream_spans = [create_span, generate, deliver, plain_resume, *transactions]
    assert {s.trace_id for s in stream_spans} == {trace_id}
    # gateway create (child of the caller) -> worker generation -> its transactions.
    assert create_span.parent_id == caller_span and create_span.service == "tidemark-gateway"
    assert create_span.kind == 2  # SPAN_KIND_SERVER
    assert create_span.attributes["tidemark.tenant"] == "default"
    assert create_span.attributes["tidemark.generator"] == "demo"
    assert create_span.attributes["http.response.status_code"] == 201
    assert generate.parent_id == create_span.span_id and generate.service == "tidemark-worker"
    assert generate.attributes["tidemark.outcome"] == "result"
    assert generate.attributes["tidemark.start_seq"] == 1
    assert generate.attributes["messaging.destination.partition.id"] == \
        create_span.attributes["messaging.destination.partition.id"]
    assert transactions, "no transaction span"
    assert {t.parent_id for t in transactions} == {generate.span_id}
    assert sum(t.attributes["tidemark.events"] for t in transactions) == \
        len(followed.stream_events) - 1  # all but seq 0, which the create wrote
    # Delivery and resume: children of the create span (the stream's first record).
    assert deliver.parent_id == create_span.span_id and deliver.service == "tidemark-gateway"
    assert deliver.attributes["tidemark.events"] == len(followed.stream_events)
    assert plain_resume.parent_id == create_span.span_id
    assert plain_resume.attributes["tidemark.events"] == len(resumed.stream_events)
    assert own_resume.parent_id == client_span
    assert own_resume.links == [(trace_id, create_span.span_id)]

    # The records in Kafka: seq 0 carries the create span, the rest their transaction's.
    records = await records_of(cluster, sid)
    assert sorted(seq for seq, _ in records) == [e.seq for e in followed.stream_events]
    tx_ids = {t.span_id for t in transactions}
    for seq, headers in records:
        rec_trace, rec_span = parse_traceparent(headers["traceparent"])
        assert rec_trace == trace_id
        assert rec_span == create_span.span_id if seq == 0 else rec_span in tx_ids, seq


async def test_a_publish_continues_the_callers_trace(
        receiver: Receiver, cluster: Cluster, http: aiohttp.ClientSession) -> None:
    traced(cluster, receiver)
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    trace_id, caller_span, traceparent = caller()
    async with http.post(f"{base}/v1/streams/{sid}/events",
                         headers={"traceparent": traceparent},
                         json=[{"type": "partial_result", "data": {"chunk": "a", "chunkIndex": 0}},
                               {"type": "result", "data": {"text": "a"}}]) as resp:
        assert resp.status == 200, await resp.text()

    [publish] = await receiver.wait_for("tidemark.publish", sid)
    assert publish.trace_id == trace_id and publish.parent_id == caller_span
    assert publish.attributes["tidemark.events"] == 2
    assert publish.attributes["http.route"] == "/v1/streams/{id}/events"
    published = [h for seq, h in await records_of(cluster, sid) if seq > 0]
    assert len(published) == 2
    for headers in published:
        assert parse_traceparent(headers["traceparent"]) == (trace_id, publish.span_id)


async def test_the_publisher_sdk_continues_the_backend_services_trace(
        cluster: Cluster) -> None:
    await cluster.gateway()  # creates the namespace's topics
    # A backend service with OpenTelemetry of its own (Tidemark's set-up is not used).
    tracer = TracerProvider().get_tracer("backend-service")
    async with Publisher(load_settings(cluster.env)) as pub:
        with tracer.start_as_current_span("answer a question") as span:
            stream = await pub.create_stream()
            await stream.partial("Hello", 0)
            await stream.result({"text": "Hello"})
        untraced = await pub.create_stream()
        await untraced.result({"text": "no trace"})
    ctx = span.get_span_context()
    records = await records_of(cluster, stream.stream_id)
    assert sorted(seq for seq, _ in records) == [0, 1, 2]
    for _, headers in records:
        assert parse_traceparent(headers["traceparent"]) == (
            f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert all("traceparent" not in h for _, h in await records_of(cluster, untraced.stream_id))


async def test_a_worker_that_takes_a_job_over_continues_the_streams_trace(
        receiver: Receiver, cluster: Cluster, http: aiohttp.ClientSession) -> None:
    traced(cluster, receiver)
    _, _ = await taken_over(cluster, http, "traced takeover")
    [create_span] = receiver.named("tidemark.create")
    sid = create_span.attributes["tidemark.stream.id"]
    generations = await receiver.wait_for("tidemark.generate", sid)
    # The killed worker's own generation span died with it; the new owner's continues
    # the stream's trace from the job record, resuming past seq 1.
    [resumed] = [g for g in generations if g.attributes["tidemark.resumed"]]
    assert resumed.trace_id == create_span.trace_id
    assert resumed.parent_id == create_span.span_id
    assert resumed.attributes["tidemark.start_seq"] > 1
    assert resumed.attributes["tidemark.outcome"] == "result"
    ids = {parse_traceparent(h["traceparent"])[0] for _, h in await records_of(cluster, sid)}
    assert ids == {create_span.trace_id}


@pytest.mark.parametrize("otel", [{}, {"OTEL_SDK_DISABLED": "true"},
                                  {"OTEL_TRACES_EXPORTER": "none"}],
                         ids=["unset", "sdk-disabled", "exporter-none"])
async def test_tracing_off_exports_nothing_and_adds_no_traceparent(
        receiver: Receiver, cluster: Cluster, http: aiohttp.ClientSession,
        otel: dict[str, str]) -> None:
    for name in [k for k in cluster.env if k.startswith("OTEL_")]:
        del cluster.env[name]
    if otel:  # the endpoint is set, but tracing is switched off
        cluster.env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                           OTEL_BSP_SCHEDULE_DELAY="100", **otel)
    cluster.worker()
    base = await cluster.gateway()
    _, _, traceparent = caller()  # an incoming traceparent changes nothing
    async with http.post(f"{base}/v1/streams", headers={"traceparent": traceparent},
                         json={"query": "untraced",
                               "options": {"tokens": 5, "tokens_per_second": 100}}) as resp:
        assert resp.status == 201
        sid = (await resp.json())["stream_id"]
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    assert reply.stream_events[-1].event == "result"
    external = await create(http, base, generator="external")
    async with http.post(f"{base}/v1/streams/{external}/events",
                         headers={"traceparent": traceparent},
                         json={"type": "result", "data": {"text": "done"}}) as resp:
        assert resp.status == 200

    for stream in (sid, external):
        records = await records_of(cluster, stream)
        assert records and all("traceparent" not in h for _, h in records)
    await asyncio.sleep(1.0)  # well past the batch processor's 100 ms schedule delay
    assert receiver.requests == 0 and receiver.spans == []
