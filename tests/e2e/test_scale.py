"""Small-scale versions of the benchmark's scenarios, as correctness tests: a few
hundred concurrent connections on as many streams, and many clients on one stream."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_slow_client import metric, produce
from tests.e2e.test_streams import assert_contiguous, create

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_hundreds_of_streams_each_delivered_exactly_once_in_order(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    streams = 300
    ids = list(await asyncio.gather(*(create(http, base, generator="external")
                                      for _ in range(streams))))
    sinks: list[list[sse_client.Event]] = [[] for _ in ids]
    readers = [asyncio.create_task(sse_client.read(
        http, f"{base}/v1/streams/{sid}/events", sink=sink, idle_timeout=60))
        for sid, sink in zip(ids, sinks, strict=True)]
    for sink, reader in zip(sinks, readers, strict=True):
        await sse_client.wait_for(sink, 1, reader)
    assert await metric(http, base, "tidemark_sse_connections") == streams

    await produce(cluster, ids, 20, payload=200, end=True)
    replies = await asyncio.wait_for(asyncio.gather(*readers), 120)
    for sid, reply in zip(ids, replies, strict=True):
        events = reply.stream_events
        assert_contiguous(events)
        assert len(events) == 21 and events[-1].event == "result"
        assert {e.envelope["stream"] for e in events} == {sid}, "another stream's event leaked"
    assert await metric(http, base, "tidemark_sse_connections") == 0


async def test_many_clients_on_one_stream_get_identical_bytes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    sinks: list[list[sse_client.Event]] = [[] for _ in range(150)]
    readers = [asyncio.create_task(sse_client.read(
        http, f"{base}/v1/streams/{sid}/events", sink=sink, idle_timeout=60)) for sink in sinks]
    for sink, reader in zip(sinks, readers, strict=True):
        await sse_client.wait_for(sink, 1, reader)
    await produce(cluster, [sid], 200, payload=100, end=True)
    replies = await asyncio.wait_for(asyncio.gather(*readers), 120)
    first = [(e.id, e.event, e.data) for e in replies[0].stream_events]
    assert len(first) == 201
    for reply in replies[1:]:
        assert [(e.id, e.event, e.data) for e in reply.stream_events] == first
