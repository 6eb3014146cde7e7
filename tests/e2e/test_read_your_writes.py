"""Read-your-writes by design: a stream whose create answered 201 is readable at once
through every gateway, under load, and never answers 404 (a browser's EventSource gives
up for good on a 404). Stream ids say where their events are, so no gateway has to wait
for a stream index to catch up."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_slow_client import metric
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks, publish

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

IDLE = 1000
STREAMS = 200
AT_ONCE = 50


async def test_streams_created_through_one_gateway_are_followed_at_once_through_another(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker(TIDEMARK_WORKER_MAX_JOBS="256")
    cluster.worker(TIDEMARK_WORKER_MAX_JOBS="256")
    # The reading gateway's wait for the log is made tiny: being found must not depend
    # on a timeout (it is what gave 404s under load when lookups waited for an index).
    writer = await cluster.gateway()
    reader = await cluster.gateway(TIDEMARK_INDEX_WAIT="0.05")
    # Load on the reading gateway: idle followers of quiet streams.
    quiet = [await create(http, writer, generator="external") for _ in range(10)]
    idle = [asyncio.create_task(sse_client.read(
        http, f"{reader}/v1/streams/{quiet[i % len(quiet)]}/events", idle_timeout=120))
        for i in range(IDLE)]
    deadline = asyncio.get_running_loop().time() + 60
    while await metric(http, reader, "tidemark_sse_connections") < IDLE:
        assert asyncio.get_running_loop().time() < deadline, "idle followers did not connect"
        await asyncio.sleep(0.2)

    async def create_and_follow(i: int) -> sse_client.Reply:
        sid = await create(http, writer, query=f"question {i}",
                           options={"tokens": 8, "tokens_per_second": 100})
        # Followed the moment the 201 arrives, through the other gateway (and every
        # fourth one through the gateway that created it).
        base = writer if i % 4 == 0 else reader
        return await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                     idle_timeout=60)

    replies: list[sse_client.Reply] = []
    try:
        for lo in range(0, STREAMS, AT_ONCE):
            replies += await asyncio.wait_for(asyncio.gather(
                *(create_and_follow(i) for i in range(lo, lo + AT_ONCE))), 120)
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)

    # Found in the log: the reading gateway never needed a stream index.
    assert await metric(http, reader, "tidemark_index_streams") == 0
    statuses = [r.status for r in replies]
    assert statuses == [200] * STREAMS, f"not 200: {[s for s in statuses if s != 200]}"
    for reply in replies:
        events = reply.stream_events
        assert_contiguous(events)
        assert events[0].envelope["data"] == {"state": "queued"}
        assert events[-1].event == "result", [e.event for e in events[-3:]]
        assert events[-1].envelope["data"]["text"] == joined_chunks(events)
        assert reply.ended_by_server


async def test_publish_through_one_gateway_is_seen_at_once_by_the_other(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    a, b = await cluster.gateway(), await cluster.gateway()
    for i in range(20):
        sid = await create(http, a, generator="external")
        # The status read through the other gateway counts the write just made.
        async with http.get(f"{b}/v1/streams/{sid}") as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "queued"
        status, _ = await publish(http, b, sid, {"type": "partial_result",
                                                 "data": {"chunk": "x", "chunkIndex": 0}})
        assert status == 200
        async with http.get(f"{a}/v1/streams/{sid}") as resp:
            body = await resp.json()
        assert (body["status"], body["last_seq"]) == ("running", 1), (i, body)
        status, _ = await publish(http, a, sid, {"type": "result", "data": {"text": "x"}})
        assert status == 200
        async with http.get(f"{b}/v1/streams/{sid}") as resp:
            body = await resp.json()
        assert (body["status"], body["last_seq"]) == ("completed", 2), (i, body)
        assert body["terminal_event_id"] is not None
