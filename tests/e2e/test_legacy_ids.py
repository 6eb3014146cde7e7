"""Streams made before stream ids described their place in the log (version 1 ids, 32
hex characters, written as that version wrote them: no ``tm-generator`` header, found
through the stream index) keep working after the upgrade: full replay, resume from any
event id handed out before, 204 at the end, status, publish."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from eventlog import index
from eventlog.clients import make_producer, started, stop_client
from eventlog.index import StreamInfo
from eventlog.jobs import Job
from eventlog.placement import partition_for
from eventlog.settings import load_settings
from eventlog.streams import now_ms, send_event
from eventlog.topics import events_topic, jobs_topic
from schemas.events import Event
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, joined_chunks, publish

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def write_v1_stream(cluster: Cluster, *, generator: str, job: bool) -> str:
    """A stream created the way the previous version created one."""
    settings = load_settings(cluster.env)
    producer = await started(lambda: make_producer(settings.kafka, role="v1"), settings.kafka,
                             "v1 producer")
    try:
        sid = uuid.uuid4().hex
        ns, partitions = settings.log.namespace, settings.log.partitions
        partition = partition_for(sid, partitions)
        ts = now_ms()
        first = Event(stream=sid, seq=0, type="status", ts=ts, data={"state": "queued"})
        meta = await (await send_event(producer, events_topic(ns), partition, first))
        info = StreamInfo(stream_id=sid, namespace=ns, topic=events_topic(ns),
                          partition=partition, first_offset=meta.offset, generator=generator,
                          status="queued", created_at=ts, updated_at=ts, last_seq=0)
        await index.put(producer, info)
        if job:
            record = Job(stream=info, query="an old question",
                         options={"tokens": 12, "tokens_per_second": 200})
            await (await producer.send(jobs_topic(ns), record.to_json(), key=sid.encode(),
                                       partition=partition))
        return sid
    finally:
        await stop_client(producer)


async def test_a_version_1_external_stream_reads_resumes_and_ends_exactly(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    await cluster.gateway()  # the topics, as the previous version made them
    sid = await write_v1_stream(cluster, generator="external", job=False)
    base = await cluster.gateway()  # started after the stream was made (an upgrade)
    for i in range(3):
        status, _ = await publish(http, base, sid, {
            "type": "partial_result", "data": {"chunk": f"c{i} ", "chunkIndex": i}})
        assert status == 200
    status, _ = await publish(http, base, sid, {"type": "result", "data": {"text": "c0 c1 c2 "}})
    assert status == 200

    full = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    events = full.stream_events
    assert_contiguous(events)
    assert [e.event for e in events] == ["status", *["partial_result"] * 3, "result"]
    for i, event in enumerate(events[:-1]):
        reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                      last_event_id=event.id)
        assert [e.id for e in reply.stream_events] == [e.id for e in events[i + 1:]]
    ended = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  last_event_id=events[-1].id)
    assert ended.status == 204
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        body = await resp.json()
    assert (body["status"], body["last_seq"], body["terminal_event_id"]) == (
        "completed", 4, events[-1].id)


async def test_a_version_1_job_is_generated_and_followed_after_the_upgrade(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    await cluster.gateway()
    sid = await write_v1_stream(cluster, generator="demo", job=True)
    cluster.worker()
    base = await cluster.gateway()
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    events = reply.stream_events
    assert_contiguous(events)
    assert events[-1].event == "result"
    assert events[-1].envelope["data"]["text"] == joined_chunks(events)
    middle = events[len(events) // 2]
    resumed = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                    last_event_id=middle.id)
    assert [e.id for e in resumed.stream_events] == [
        e.id for e in events if e.seq > middle.seq]
