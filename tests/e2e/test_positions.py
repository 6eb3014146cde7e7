"""Positions the log no longer holds: retention (log start moved past them), another
topic epoch, and a stream deleted whole. Retention is made to happen at once with
Kafka's DeleteRecords, which moves a partition's log start exactly as retention does."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from schemas.eventid import encode_event_id, parse_event_id
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import create, publish

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def offset_of(event_id: str) -> int:
    """Read the offset out of an id. Only this test peeks inside the opaque id: it
    needs a Kafka offset to delete records up to."""
    return parse_event_id(event_id).offset


def as_version_1(event_id: str) -> str:
    """The id as codec version 1 wrote it (no seq): what clients hold from before."""
    e = parse_event_id(event_id)
    return encode_event_id(e.epoch, e.partition, e.offset, None)


async def delete_before(bootstrap: str, topic: str, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(offset)},
                                   timeout_ms=10_000)
    finally:
        await admin.close()


async def test_retention_gives_reset_then_earliest_and_a_deleted_stream_is_410(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"  # every stream in partition 0
    base = await cluster.gateway()
    topic = f"tidemark.{cluster.namespace}.events"

    gone = await create(http, base, generator="external")
    await publish(http, base, gone, [{"type": "status", "data": {"state": "running"}},
                                     {"type": "result", "data": {"text": "done"}}])
    gone_events = (await sse_client.read(http, f"{base}/v1/streams/{gone}/events")).events

    live = await create(http, base, generator="external")
    for i in range(4):
        await publish(http, base, live, {"type": "partial_result",
                                         "data": {"chunk": f"c{i} ", "chunkIndex": i}})
    live_events = (await sse_client.read(http, f"{base}/v1/streams/{live}/events",
                                         max_events=5)).stream_events
    assert [e.seq for e in live_events] == [0, 1, 2, 3, 4]

    # Retention deletes everything before the live stream's seq 2. (Gateways learn a
    # partition's log start at most a second late.)
    await delete_before(cluster.bootstrap, topic, offset_of(live_events[2].id or ""))
    await asyncio.sleep(1.2)

    for position in (None, gone_events[0].id):
        reply = await sse_client.read(http, f"{base}/v1/streams/{gone}/events",
                                      last_event_id=position)
        assert reply.status == 410
        assert reply.headers["Content-Type"].startswith("application/problem+json")

    for position in (None, live_events[0].id):
        reply = await sse_client.read(http, f"{base}/v1/streams/{live}/events",
                                      last_event_id=position, max_events=3)
        assert reply.events[0].event == "reset"
        notice = reply.events[0].envelope
        assert notice == {"reason": "retention", "earliest": live_events[2].id}
        assert [e.seq for e in reply.stream_events] == [2, 3, 4]

    # A position still held resumes without a reset.
    reply = await sse_client.read(http, f"{base}/v1/streams/{live}/events",
                                  last_event_id=live_events[2].id, max_events=2)
    assert [e.event for e in reply.events] == ["partial_result", "partial_result"]
    assert [e.seq for e in reply.stream_events] == [3, 4]


async def test_position_from_another_topic_epoch_gives_reset_then_whole_stream(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    await publish(http, base, sid, [{"type": "status", "data": {"state": "running"}},
                                    {"type": "result", "data": {"text": "ok"}}])
    full = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    real = parse_event_id(full.stream_events[1].id or "")  # the running status, seq 1
    other = "0" * 8 if real.epoch != "0" * 8 else "f" * 8
    # A version 1 id carries no seq: a reset, then the whole stream.
    foreign = encode_event_id(other, real.partition, real.offset, None)
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  last_event_id=foreign)
    assert reply.events[0].event == "reset"
    assert reply.events[0].envelope["reason"] == "epoch"
    assert [e.id for e in reply.stream_events] == [e.id for e in full.stream_events]
    # A version 2 id carries its seq (what a copy of the log in another cluster resumes
    # from: docs/federation.md): the events after it, no reset.
    foreign = encode_event_id(other, real.partition, real.offset + 1000, real.seq)
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  last_event_id=foreign)
    assert [e.event for e in reply.events] == ["result"]
    assert [e.id for e in reply.stream_events] == [e.id for e in full.stream_events[2:]]
    # ... and its terminal event's seq: nothing is left, 204.
    ended = parse_event_id(full.last_id or "")
    async with http.get(f"{base}/v1/streams/{sid}/events", headers={
            "Accept": "text/event-stream",
            "Last-Event-ID": encode_event_id(other, ended.partition, 5, ended.seq)}) as resp:
        assert resp.status == 204


async def test_real_retention_deletes_a_finished_stream_and_resets_an_old_position(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"
    cluster.env["TIDEMARK_RETENTION_MS"] = "4000"  # segments roll every second
    base = await cluster.gateway()
    old = await create(http, base, generator="external")
    await publish(http, base, old, {"type": "result", "data": {"text": "old"}})
    old_events = (await sse_client.read(http, f"{base}/v1/streams/{old}/events")).events
    live = await create(http, base, generator="external")
    first = (await sse_client.read(http, f"{base}/v1/streams/{live}/events",
                                   max_events=1)).stream_events[0]
    # Keep writing so segments roll and the broker's retention check deletes old ones.
    for i in range(120):
        await publish(http, base, live, {"type": "partial_result",
                                         "data": {"chunk": ".", "chunkIndex": i}})
        reply = await sse_client.read(http, f"{base}/v1/streams/{old}/events",
                                      last_event_id=old_events[0].id)
        if reply.status == 410:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("retention never deleted the finished stream")
    reply = await sse_client.read(http, f"{base}/v1/streams/{live}/events",
                                  last_event_id=first.id, max_events=1)
    assert reply.events[0].event == "reset"
    assert reply.events[0].envelope["reason"] == "retention"
    assert reply.stream_events[0].id == reply.events[0].envelope["earliest"]


async def tombstoned(bootstrap: str, stream_id: str) -> bool:
    """Whether the stream index holds a tombstone (a record with no value) for the stream."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition("tidemark.streams", p)
               for p in consumer.partitions_for_topic("tidemark.streams") or ()]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition("tidemark.streams", p)
                   for p in consumer.partitions_for_topic("tidemark.streams") or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found = False
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found = found or any(r.key == stream_id.encode() and r.value is None
                                     for r in records)
        return found
    finally:
        await consumer.stop()


async def test_streams_deleted_by_retention_get_tombstones_in_the_index(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"
    cluster.env["TIDEMARK_RETENTION_MS"] = "4000"
    base = await cluster.gateway()
    cluster.worker(TIDEMARK_JANITOR_INTERVAL="1")
    old = await create(http, base, generator="external")
    await publish(http, base, old, {"type": "result", "data": {"text": "old"}})
    live = await create(http, base, generator="external")
    assert not await tombstoned(cluster.bootstrap, old)
    for i in range(120):
        await publish(http, base, live, {"type": "partial_result",
                                         "data": {"chunk": ".", "chunkIndex": i}})
        if await tombstoned(cluster.bootstrap, old):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("no tombstone for a stream retention deleted")
    # Its answers stay exact: gone, not unknown, once the gateway's view of the log start
    # (at most a second old, eventlog.reader.LogReader.log_start) has moved past it.
    for _ in range(50):
        reply = await sse_client.read(http, f"{base}/v1/streams/{old}/events")
        if reply.status != 200:
            break
        await asyncio.sleep(0.1)
    assert reply.status == 410
    assert not await tombstoned(cluster.bootstrap, live)
