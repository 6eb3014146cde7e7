"""A worker killed mid-stream: another takes the job over and the client sees no gap
and no duplicate (transactions abort, the new owner resumes from the last committed
seq). A gateway draining on SIGTERM ends open responses so clients resume elsewhere."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.procs import Proc, scrape
from tests.sse_client import Event
from workers.demo import demo_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def taken_over(cluster: Cluster, http: aiohttp.ClientSession, query: str,
                     generator: str = "demo", text: str | None = None) -> tuple[str, Proc]:
    """A stream of 80 chunks (``generator``'s, ``text`` joined; default the demo's)
    followed while its worker is SIGKILLed mid-way and another starts; what the follower
    saw is checked whole and exactly once. The gateway and new worker."""
    first = cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, query=query, generator=generator,
                       options={"tokens": 80, "tokens_per_second": 20})
    url = f"{base}/v1/streams/{sid}/events"
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(http, url, sink=seen, idle_timeout=60))
    await sse_client.wait_for(seen, 15, reader)
    first.kill()
    killed_at = len(seen)
    second = cluster.worker()
    await reader

    assert len(seen) > killed_at, "no event came after the takeover"
    assert_contiguous(seen)
    assert seen[-1].event == "result"
    expected = demo_text(query, 80) if text is None else text
    assert seen[-1].envelope["data"]["text"] == joined_chunks(seen) == expected
    # A fresh full read agrees: the aborted transaction's events are nowhere.
    again = (await sse_client.read(http, url)).stream_events
    assert [e.id for e in again] == [e.id for e in seen]
    return base, second


async def test_worker_killed_mid_stream_another_finishes_it_exactly_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base, second = await taken_over(cluster, http, "who takes over?")

    # Operators see it: the second worker resumed and completed one stream; the gateway
    # saw one completion.
    worker_metrics = await scrape(http, second.metrics_url)
    resumed = 'tidemark_worker_streams_total{outcome="resumed",tenant="default"}'
    assert worker_metrics[resumed] == 1
    assert worker_metrics[resumed.replace("resumed", "completed")] == 1
    gateway_metrics = await scrape(http, f"{base}/metrics")
    assert gateway_metrics['tidemark_stream_outcomes_total{outcome="completed"}'] == 1


async def test_gateway_sigterm_ends_open_responses_and_exits(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    other = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 200, "tokens_per_second": 20})
    seen: list[Event] = []
    reader = asyncio.create_task(
        sse_client.read(http, f"{base}/v1/streams/{sid}/events", sink=seen))
    await sse_client.wait_for(seen, 5, reader)
    gateway = cluster.proc("gateway0")
    gateway.send(signal.SIGTERM)
    reply = await asyncio.wait_for(reader, 15)
    assert reply.ended_by_server, "the response was not ended cleanly"
    assert any("shutting down" in c for c in reply.comments)
    assert await asyncio.to_thread(gateway.popen.wait, 15) == 0
    rest = await sse_client.read(http, f"{other}/v1/streams/{sid}/events",
                                 last_event_id=reply.last_id, max_events=5)
    assert_contiguous(seen + rest.stream_events)


async def test_a_stalled_worker_that_comes_back_late_is_fenced_and_writes_nothing(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    zombie = cluster.worker()
    base = await cluster.gateway()
    query = "who is the zombie?"
    sid = await create(http, base, query=query, options={"tokens": 60, "tokens_per_second": 10})
    url = f"{base}/v1/streams/{sid}/events"
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(http, url, sink=seen, idle_timeout=90))
    await sse_client.wait_for(seen, 8, reader)
    zombie.send(signal.SIGSTOP)  # stalled mid-transaction, still "owning" its partitions
    try:
        cluster.worker()  # takes over once the group gives up on the stalled one
        await asyncio.wait_for(reader, 90)
    finally:
        zombie.send(signal.SIGCONT)  # back, late, with its old producer and its old jobs
    await asyncio.sleep(5)

    assert_contiguous(seen)
    assert seen[-1].event == "result"
    assert seen[-1].envelope["data"]["text"] == demo_text(query, 60)
    again = (await sse_client.read(http, url)).stream_events
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in seen], \
        "the zombie wrote after it was fenced"
