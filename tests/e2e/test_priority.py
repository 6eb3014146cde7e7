"""Priority: on workers saturated by free users, a premium user's job starts at once,
ahead of the free jobs still queued; it survives a worker's death like any other.

The free user is the suite's test user (a token without ``tier``: the default tier,
``free``); the premium user's token says ``tier: premium`` (``priority: true`` in the
default tier table).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.e2e.test_takeover import scrape, taken_over
from tests.procs import auth_headers
from tests.sse_client import Event
from workers.demo import demo_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
#: Free streams that hold their slots for the whole test.
LONG = {"tokens": 400, "tokens_per_second": 5}


@pytest.fixture
async def premium() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of a premium user."""
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers=auth_headers(sub="premium-user", tier="premium")) as session:
        yield session


async def generated(http: aiohttp.ClientSession, base: str, sid: str) -> int:
    """How far the stream's generation got: its last seq (0: still queued)."""
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
    return int(body["last_seq"])


async def first_generated(http: aiohttp.ClientSession, base: str, sid: str, *,
                          timeout: float) -> tuple[float, Event]:
    """Follow the stream until its first event after ``queued`` (the first the worker
    wrote); return when it arrived (monotonic time) and the event."""
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(
        http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=timeout + 30))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(seen) >= 2:
                return time.monotonic(), seen[1]
            if reader.done():
                raise AssertionError(f"the read ended early: {reader.result()}")
            await asyncio.sleep(0.01)
        raise AssertionError(f"stream {sid}: nothing generated in {timeout}s")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def wait_generating(http: aiohttp.ClientSession, base: str, sids: list[str], *,
                          timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(await asyncio.gather(*(generated(http, base, s) for s in sids))):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the free streams did not all start")


async def test_a_premium_job_starts_at_once_on_a_worker_full_of_free_jobs(
        cluster: Cluster, http: aiohttp.ClientSession,
        premium: aiohttp.ClientSession) -> None:
    # 4 slots; the default reserve (10 %, rounded up: 1 slot) is only for priority jobs.
    cluster.worker(TIDEMARK_WORKER_MAX_JOBS="4")
    base = await cluster.gateway()
    running = [await create(http, base, options=LONG) for _ in range(3)]
    await wait_generating(http, base, running)
    queued = [await create(http, base, options=LONG) for _ in range(3)]
    await asyncio.sleep(1.5)
    assert [await generated(http, base, s) for s in queued] == [0, 0, 0], \
        "a free job took a slot of the priority reserve"

    query = "premium first"
    started = time.monotonic()
    sid = await create(premium, base, query=query,
                       options={"tokens": 10, "tokens_per_second": 50})
    arrived, first = await first_generated(premium, base, sid, timeout=10)
    assert first.envelope["data"]["state"] == "running"
    assert arrived - started < 3.0, f"the premium job waited {arrived - started:.1f}s"
    reply = await sse_client.read(premium, f"{base}/v1/streams/{sid}/events")
    assert_contiguous(reply.stream_events)
    assert reply.stream_events[-1].event == "result"
    assert joined_chunks(reply.stream_events) == demo_text(query, 10)

    # The free jobs created before it are still queued; a later free one too.
    later = await create(http, base, options=LONG)
    await asyncio.sleep(1.0)
    assert [await generated(http, base, s) for s in [*queued, later]] == [0, 0, 0, 0]
    assert all([await generated(http, base, s) > 0 for s in running])


async def test_a_freed_slot_goes_to_the_queued_premium_job_before_older_free_ones(
        cluster: Cluster, http: aiohttp.ClientSession,
        premium: aiohttp.ClientSession) -> None:
    # No reserve: the premium job waits too, but it is the next to start.
    cluster.worker(TIDEMARK_WORKER_MAX_JOBS="2", TIDEMARK_WORKER_PRIORITY_RESERVE="0")
    base = await cluster.gateway()
    short = await create(http, base, options={"tokens": 10, "tokens_per_second": 5})
    longer = await create(http, base, options={"tokens": 60, "tokens_per_second": 5})
    await wait_generating(http, base, [short, longer])
    older = [await create(http, base, options=LONG) for _ in range(2)]
    await asyncio.sleep(0.5)
    sid = await create(premium, base, options={"tokens": 200, "tokens_per_second": 5})
    assert await generated(premium, base, sid) == 0, "it started without a free slot"

    # The short stream ends (after about 2 s): its slot goes to the premium job, not to
    # the free jobs queued before it.
    await first_generated(premium, base, sid, timeout=20)
    assert [await generated(http, base, s) for s in older] == [0, 0], \
        "an older free job started before the premium one"
    assert await generated(http, base, longer) > 0


async def test_a_premium_stream_is_cancelled_like_any_other(
        cluster: Cluster, premium: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(premium, base, options={"tokens": 400, "tokens_per_second": 10})
    await first_generated(premium, base, sid, timeout=15)
    async with premium.post(f"{base}/v1/streams/{sid}/cancel") as resp:
        assert resp.status == 202, await resp.text()
    reply = await asyncio.wait_for(
        sse_client.read(premium, f"{base}/v1/streams/{sid}/events"), 15)
    assert reply.stream_events[-1].event == "cancelled"
    assert_contiguous(reply.stream_events)


async def test_a_worker_killed_mid_premium_stream_another_finishes_it_exactly_once(
        cluster: Cluster, http: aiohttp.ClientSession,
        premium: aiohttp.ClientSession) -> None:
    _, second = await taken_over(cluster, premium, "who takes the premium job over?")
    # The worker counts the stream once its last transaction's commit is acknowledged,
    # which can be a moment after a reader has seen the result.
    completed = 'tidemark_worker_streams_total{outcome="completed",tenant="default"}'
    for _ in range(50):
        worker_metrics = await scrape(http, second.metrics_url)
        if worker_metrics[completed] >= 1:
            break
        await asyncio.sleep(0.1)
    assert worker_metrics['tidemark_worker_jobs_started_total{class="priority"}'] == 1
    assert worker_metrics['tidemark_worker_jobs_started_total{class="other"}'] == 0
    resumed = 'tidemark_worker_streams_total{outcome="resumed",tenant="default"}'
    assert worker_metrics[resumed] == 1
    assert worker_metrics[completed] == 1
