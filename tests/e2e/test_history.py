"""Gateway memory and start-up do not grow with history: streams are found in the log
from their ids, so a gateway holds nothing per stream beyond a bounded cache, and a new
one is ready without reading the stream index. Answers stay exact for old streams."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from eventlog import index
from eventlog.clients import make_producer, started, stop_client
from eventlog.reader import LogReader
from eventlog.settings import load_settings
from eventlog.streams import StreamCreator, now_ms, send_event
from schemas.events import Event
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_slow_client import metric
from tests.e2e.test_streams import assert_contiguous

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

STREAMS = 2000
CACHE = 100


async def finished_streams(cluster: Cluster, n: int) -> list[tuple[str, str]]:
    """``n`` external streams, each ended with a result: created by ``StreamCreator`` (the
    gateway's create path), each result written as the appender writes a terminal event
    (the event, then the stream's final index record). Returns (stream id, result id)."""
    settings = load_settings(cluster.env)
    producer = await started(lambda: make_producer(settings.kafka, role="test"),
                             settings.kafka, "test producer")
    reader = LogReader(settings.kafka, size=2, role="test-floor")
    out: list[tuple[str, str]] = []
    try:
        creator = StreamCreator(settings.log, producer, floor=reader.floor)
        for lo in range(0, n, 250):
            infos = await asyncio.gather(*(
                creator.create(generator="external", query=None, options=None, with_job=False,
                               tenant="default")
                for _ in range(lo, min(n, lo + 250))))
            results = [Event(stream=i.stream_id, seq=1, type="result", ts=now_ms(),
                             data={"text": f"answer {i.stream_id}"}) for i in infos]
            futures = [await send_event(producer, i.topic, i.partition, ev)
                       for i, ev in zip(infos, results, strict=True)]
            metas = await asyncio.gather(*futures)
            for info, meta in zip(infos, metas, strict=True):
                await index.enqueue(producer, info.evolve(
                    status="completed", last_seq=1, terminal_offset=meta.offset))
                out.append((info.stream_id, f"{info.partition}-{meta.offset}"))
            await producer.flush()
    finally:
        await reader.close()
        await stop_client(producer)
    return out


async def test_a_new_gateway_holds_nothing_per_stream_and_answers_old_streams_exactly(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    running = await cluster.gateway()
    made = await finished_streams(cluster, STREAMS)
    assert await metric(http, running, "tidemark_index_streams") == 0
    assert await metric(http, running, "tidemark_lookup_cached_streams") == 0

    fresh = await cluster.gateway(TIDEMARK_LOOKUP_CACHE_STREAMS=str(CACHE))
    assert await metric(http, fresh, "tidemark_index_streams") == 0
    sample = random.Random(7).sample(made, 3 * CACHE)
    for sid, _ in sample:
        async with http.get(f"{fresh}/v1/streams/{sid}") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert (body["status"], body["last_seq"], body["generator"]) == (
            "completed", 1, "external"), body
        assert body["terminal_event_id"] is not None
        # At or after the terminal event: nothing more will come.
        reply = await sse_client.read(http, f"{fresh}/v1/streams/{sid}/events",
                                      last_event_id=body["terminal_event_id"])
        assert reply.status == 204
    assert 0 < await metric(http, fresh, "tidemark_lookup_cached_streams") <= CACHE

    for sid, _ in sample[:20]:
        reply = await sse_client.read(http, f"{fresh}/v1/streams/{sid}/events")
        assert_contiguous(reply.stream_events)
        assert [e.event for e in reply.stream_events] == ["status", "result"]
        assert {e.envelope["stream"] for e in reply.stream_events} == {sid}


async def test_unknown_and_forged_ids_are_404(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    real, _ = (await finished_streams(cluster, 1))[0]
    parts = real.split("-")
    forged = [
        "-".join([*parts[:4], "0" * 24]),             # a random part nobody was given
        "-".join([parts[0], str((int(parts[1]) + 1) % 4), *parts[2:]]),  # another partition
        "-".join([parts[0], "99", *parts[2:]]),       # a partition that does not exist
        "-".join([*parts[:3], "1000", parts[4]]),     # created long ago
        "0123456789abcdef0123456789abcdef",           # an id without a location
    ]
    for sid in forged:
        for path in ("", "/events"):
            async with http.get(f"{base}/v1/streams/{sid}{path}") as resp:
                assert resp.status == 404, (sid, path, await resp.text())
                assert resp.content_type == "application/problem+json"
