"""End to end with real processes: `tidemark gateway` and `tidemark worker` against a
real Kafka broker, checked through HTTP and SSE as a client sees them."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.sse_client import TERMINAL, Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def create(http: aiohttp.ClientSession, base: str, **body: Any) -> str:
    body.setdefault("query", "what is a tidemark?")
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        assert resp.status == 201, await resp.text()
        reply = await resp.json()
    assert reply["events_url"] == f"/v1/streams/{reply['stream_id']}/events"
    return str(reply["stream_id"])


def assert_contiguous(events: list[Event], start: int = 0) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(start, start + len(seqs))), seqs


def joined_chunks(events: list[Event]) -> str:
    return "".join(e.envelope["data"]["chunk"] for e in events if e.event == "partial_result")


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_stream_reads_to_its_result_with_every_seq_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 30, "tokens_per_second": 200})
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert reply.headers["Cache-Control"] == "no-cache, no-transform"
    assert reply.headers["X-Accel-Buffering"] == "no"
    assert reply.first_field == "retry" and reply.retry == 500
    assert reply.ended_by_server
    events = reply.stream_events
    assert_contiguous(events)
    assert events[0].event == "status" and events[0].envelope["data"]["state"] == "queued"
    assert events[-1].event == "result"
    assert [e.event for e in events].count("partial_result") == 30
    assert events[-1].envelope["data"]["text"] == joined_chunks(events)
    assert all(e.envelope["stream"] == sid for e in events)
    progress = [e.envelope["data"] for e in events if e.event == "progress"]
    assert progress[-1]["percentage"] == 100
    assert {"percentage", "estimatedTimeRemaining", "currentStep", "completedSteps"} <= \
        set(progress[1])

    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        status = await resp.json()
    assert status["status"] == "completed"
    assert status["last_seq"] == events[-1].seq
    assert status["terminal_event_id"] == events[-1].id


async def test_resume_with_header_and_query_parameter_gets_exactly_the_rest(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 40, "tokens_per_second": 40})
    url = f"{base}/v1/streams/{sid}/events"

    first = await sse_client.read(http, url, max_events=12)
    assert not first.ended_by_server
    by_header = await sse_client.read(http, url, last_event_id=first.last_id)
    async with http.get(url, params={"last_event_id": first.last_id or ""}) as resp:
        assert resp.status == 200
    by_query = await sse_client.read(http, f"{url}?last_event_id={first.last_id}")

    for rest in (by_header, by_query):
        whole = first.stream_events + rest.stream_events
        assert_contiguous(whole)
        assert whole[-1].event == "result"
        assert whole[-1].envelope["data"]["text"] == joined_chunks(whole)
    assert [e.id for e in by_header.stream_events] == [e.id for e in by_query.stream_events]


async def test_finished_stream_answers_204_and_unknown_stream_404(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 3, "tokens_per_second": 500})
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    assert reply.stream_events[-1].event == "result"

    again = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  last_event_id=reply.last_id)
    assert again.status == 204 and again.events == []

    async with http.get(f"{base}/v1/streams/{'0' * 32}/events") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["detail"]


@pytest.mark.parametrize("bad", ["nonsense", "1-zzzzzzzz-0-1", "1-abcdef01-0-" + "9" * 60,
                                 "2-abcdef01-0-1", "1-abcdef01--1-5"])
async def test_malformed_position_is_400_problem(
        cluster: Cluster, http: aiohttp.ClientSession, bad: str) -> None:
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    async with http.get(f"{base}/v1/streams/{sid}/events",
                        headers={"Last-Event-ID": bad}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        assert "position" in (await resp.json())["detail"]


async def test_gateway_killed_mid_stream_client_resumes_on_another(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    first_gw = await cluster.gateway()
    second_gw = await cluster.gateway()
    sid = await create(http, first_gw, options={"tokens": 60, "tokens_per_second": 30})

    seen: list[Event] = []
    reader = asyncio.create_task(
        sse_client.read(http, f"{first_gw}/v1/streams/{sid}/events", sink=seen))
    while len(seen) < 1:
        await asyncio.sleep(0.05)
        if reader.done():
            break
    await asyncio.sleep(0.8)
    cluster.proc("gateway0").stop(signal.SIGKILL)
    with pytest.raises(aiohttp.ClientError):
        await reader
    assert seen, "the first gateway delivered nothing before it was killed"
    rest = await sse_client.read(http, f"{second_gw}/v1/streams/{sid}/events",
                                 last_event_id=seen[-1].id)
    whole = seen + rest.stream_events
    assert_contiguous(whole)
    assert whole[-1].event == "result"
    assert whole[-1].envelope["data"]["text"] == joined_chunks(whole)
