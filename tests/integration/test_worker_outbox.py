"""The worker's transactional writer against a real broker: what it commits is what a
client reads, the job's offset is committed naming the writer, and a writer whose
``transactional.id`` is started elsewhere (what a claim does to the last writer) has
its open transaction aborted and commits nothing more."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from eventlog.clients import make_admin, make_producer, started, stop_client
from eventlog.index import StreamIndex, StreamInfo
from eventlog.settings import Settings, load_settings
from eventlog.streams import now_ms, send_event
from eventlog.topics import jobs_topic
from schemas import events
from schemas.events import Event
from tests import sse_client
from tests.conftest import Cluster
from workers.metrics import WorkerMetrics
from workers.outbox import Entry, OffsetTracker, Outbox
from workers.runner import group_id, new_writer_id

pytestmark = pytest.mark.integration


async def _external_stream(http: aiohttp.ClientSession, base: str,
                           settings: Settings) -> StreamInfo:
    async with http.post(f"{base}/v1/streams",
                         json={"query": "outbox", "generator": "external"}) as resp:
        assert resp.status == 201
        stream_id = (await resp.json())["stream_id"]
    idx = StreamIndex(settings.kafka, namespace=settings.log.namespace)
    await idx.start()
    try:
        assert await idx.load(timeout=10)
        info = idx.get(stream_id)
    finally:
        await idx.stop()
    assert info is not None
    return info


def _event(info: StreamInfo, seq: int, kind: str, data: dict[str, object]) -> Event:
    return Event(stream=info.stream_id, seq=seq, type=kind, ts=now_ms(), data=data)


async def test_outbox_commits_what_clients_read_and_names_its_writer_in_the_offset(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    settings = load_settings(cluster.env)
    ns = settings.log.namespace
    infos = [await _external_stream(http, base, settings) for _ in range(2)]
    writer_id = new_writer_id(ns)
    producer = await started(lambda: make_producer(settings.kafka, role="test-writer",
                                                   transactional_id=writer_id, linger_ms=0),
                             settings.kafka, "writer start")
    jobs_tp = TopicPartition(jobs_topic(ns), 0)
    tracker = OffsetTracker(0)
    tracker.begin(0)  # the job record of the second stream, say
    metrics = WorkerMetrics()
    # Three events per transaction at most: the streams span several transactions.
    outbox = Outbox(producer, group_id=group_id(ns), writer_id=writer_id,
                    trackers={jobs_tp: tracker}, linger_ms=5, batch_events=3, metrics=metrics)
    flusher = asyncio.create_task(outbox.run())
    try:
        for seq in range(1, 6):
            for info in infos:
                await outbox.put(Entry(event=_event(info, seq, events.PARTIAL_RESULT, {
                    "chunk": f"{seq} ", "chunkIndex": seq - 1, "isComplete": False}),
                    info=info, snapshot=seq == 1))
        await outbox.put_and_wait(Entry(event=_event(infos[0], 6, events.RESULT, {
            "text": "1 2 3 4 5 "}), info=infos[0]))
        await outbox.put_and_wait(Entry(event=_event(infos[1], 6, events.RESULT, {
            "text": "1 2 3 4 5 "}), info=infos[1], jobs_tp=jobs_tp, done_offset=0))
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await stop_client(producer)

    for info in infos:
        reply = await sse_client.read(http, f"{base}/v1/streams/{info.stream_id}/events")
        assert [e.seq for e in reply.stream_events] == list(range(7))
        assert reply.stream_events[-1].event == "result"
        async with http.get(f"{base}/v1/streams/{info.stream_id}") as resp:
            status = await resp.json()
        # The index record written with the terminal event names that event's position.
        assert status["status"] == "completed" and status["last_seq"] == 6
        assert status["terminal_event_id"] == reply.stream_events[-1].id
    assert metrics.transactions._value.get() >= 4
    admin = await started(lambda: make_admin(settings.kafka, role="test-admin"),
                          settings.kafka, "admin start")
    try:
        committed = await admin.list_consumer_group_offsets(group_id(ns), partitions=[jobs_tp])
    finally:
        await stop_client(admin)
    assert committed[jobs_tp].offset == 1
    assert committed[jobs_tp].metadata == writer_id


async def test_starting_a_writers_id_elsewhere_aborts_its_open_transaction(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    settings = load_settings(cluster.env)
    info = await _external_stream(http, base, settings)
    writer_id = new_writer_id(settings.log.namespace)
    zombie = await started(lambda: make_producer(settings.kafka, role="test-zombie",
                                                 transactional_id=writer_id, linger_ms=0),
                           settings.kafka, "zombie start")
    try:
        await zombie.begin_transaction()
        sent = await send_event(zombie, info.topic, info.partition, _event(
            info, 1, events.PARTIAL_RESULT, {"chunk": "late", "chunkIndex": 0,
                                             "isComplete": False}))
        await sent  # in the log, but its transaction is still open
        # What a claim does to the partition's last writer.
        fencer = await started(lambda: make_producer(settings.kafka, role="test-fencer",
                                                     transactional_id=writer_id, linger_ms=0),
                               settings.kafka, "fencer start")
        await stop_client(fencer)
        with pytest.raises(ProducerFenced):
            await zombie.commit_transaction()
    finally:
        await stop_client(zombie)
    # Heartbeats every second (the test cluster's setting): three of them, and nothing else.
    reply = await sse_client.read(http, f"{base}/v1/streams/{info.stream_id}/events",
                                  stop_after_comments=3)
    assert [e.seq for e in reply.stream_events] == [0], "the fenced writer's event is shown"
