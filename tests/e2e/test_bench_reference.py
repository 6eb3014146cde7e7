"""The benchmark's reference gateway (one Kafka consumer per client) must be correct for
its comparisons to mean anything: a small-scale check that it delivers each live event
once, in order, to each client."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_slow_client import produce
from tests.e2e.test_streams import create
from tests.procs import Proc, free_port, wait_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_reference_gateway_delivers_live_events_once_in_order(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()  # creates the topics and the streams' first events
    port = free_port()
    reference = Proc("baseline", [], cluster.env, cluster.logdir,
                     argv=[sys.executable, "-m", "bench.baseline_gateway", "--port", str(port)])
    cluster.procs.append(reference)
    wait_port(port, reference)
    ids = list(await asyncio.gather(*(create(http, base, generator="external")
                                      for _ in range(20))))
    # It starts each client at the log's end, before it sends the response headers:
    # once every client has its headers, nothing published after can be missed.
    responses = [await http.get(f"http://127.0.0.1:{port}/v1/streams/{sid}/events")
                 for sid in ids]
    readers = [asyncio.create_task(sse_client.parse(resp, max_events=30, idle_timeout=60))
               for resp in responses]
    await produce(cluster, ids, 30, payload=50)
    try:
        replies = await asyncio.wait_for(asyncio.gather(*readers), 60)
    finally:
        for resp in responses:
            resp.release()
    for sid, reply in zip(ids, replies, strict=True):
        assert [e.seq for e in reply.stream_events] == list(range(1, 31))
        assert {e.envelope["stream"] for e in reply.stream_events} == {sid}
