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
    assert reply["events_url"] == (f"/v1/streams/{reply['stream_id']}/events"
                                   f"?access_token={reply['read_token']}")
    return str(reply["stream_id"])


def assert_contiguous(events: list[Event], start: int = 0) -> None:
    seqs = [e.seq for e in events]
    assert seqs == list(range(start, start + len(seqs))), seqs


def joined_chunks(events: list[Event]) -> str:
    return "".join(e.envelope["data"]["chunk"] for e in events if e.event == "partial_result")


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
    await sse_client.wait_for(seen, 10, reader)
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


async def publish(http: aiohttp.ClientSession, base: str, sid: str,
                  body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{base}/v1/streams/{sid}/events", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_external_stream_publish_retry_is_not_shown_twice(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    status, reply = await publish(http, base, sid, [
        {"type": "status", "data": {"state": "running"}, "seq": 1},
        {"type": "partial_result", "data": {"chunk": "Hello, ", "chunkIndex": 0}, "seq": 2},
    ])
    assert status == 200 and [w["seq"] for w in reply["written"]] == [1, 2]
    # A retried request (same seqs) is accepted and written nothing.
    status, reply = await publish(http, base, sid, {
        "type": "partial_result", "data": {"chunk": "Hello, ", "chunkIndex": 0}, "seq": 2})
    assert status == 200 and reply["written"] == [] and reply["duplicates"] == 1
    # Without seq, the next one is taken.
    status, reply = await publish(http, base, sid, {
        "type": "partial_result", "data": {"chunk": "world", "chunkIndex": 1}})
    assert status == 200 and reply["written"][0]["seq"] == 3
    # A gap is refused with the seq expected.
    status, reply = await publish(http, base, sid, {
        "type": "partial_result", "data": {"chunk": "!", "chunkIndex": 2}, "seq": 9})
    assert status == 409 and reply["expected_seq"] == 4
    status, reply = await publish(http, base, sid, {"type": "result",
                                                    "data": {"text": "Hello, world"}})
    assert status == 200 and reply["ended"] is True
    status, reply = await publish(http, base, sid, {"type": "status", "data": {"state": "x"}})
    assert status == 409

    events = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
    assert_contiguous(events)
    assert [e.event for e in events] == ["status", "status", "partial_result",
                                         "partial_result", "result"]
    assert joined_chunks(events) == events[-1].envelope["data"]["text"]
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        assert (await resp.json())["status"] == "completed"


@pytest.mark.parametrize(("body", "pointer"), [
    ({"type": "progress", "data": {"percentage": 140}}, "/data/percentage"),
    ({"type": "partial_result", "data": {"chunkIndex": 0}}, "/data"),
    ([{"type": "status", "data": {"state": "ok"}}, {"type": "nope", "data": {}}], "/1/type"),
    ({"type": "error", "data": {"code": "x", "message": "m", "retryable": "yes"}},
     "/data/retryable"),
    ({"type": "status", "data": {"state": "ok"}, "seq": -1}, "/seq"),
    ([], ""),
])
async def test_invalid_publish_is_422_with_the_failing_field_and_writes_nothing(
        cluster: Cluster, http: aiohttp.ClientSession, body: Any, pointer: str) -> None:
    base = await cluster.gateway()
    sid = await create(http, base, generator="external")
    async with http.post(f"{base}/v1/streams/{sid}/events", json=body) as resp:
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
    assert problem["field"] == pointer and problem["detail"]
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        assert (await resp.json())["last_seq"] == 0


async def test_bad_bodies_get_problems_not_crashes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(TIDEMARK_MAX_BODY_BYTES="2048")
    sid = await create(http, base, generator="external")
    url = f"{base}/v1/streams/{sid}/events"
    big = {"type": "metadata", "data": {"blob": "x" * 4096}}
    async with http.post(url, json=big) as resp:
        assert resp.status == 413
        assert resp.content_type == "application/problem+json"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}
                         ) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
    async with http.post(f"{base}/v1/streams", json={"query": ""}) as resp:
        assert resp.status == 422 and (await resp.json())["field"] == "/query"
    async with http.post(f"{base}/v1/streams", json={"query": "q", "generator": "nope"}) as resp:
        assert resp.status == 422 and (await resp.json())["field"] == "/generator"
    async with http.post(f"{base}/v1/streams", json={"query": "q", "options": {"tokens": 0}}
                         ) as resp:
        assert resp.status == 422 and (await resp.json())["field"] == "/options/tokens"
    async with http.get(f"{base}/v1/streams/..%2Fetc/events") as resp:
        assert resp.status == 404 and resp.content_type == "application/problem+json"
    async with http.delete(f"{base}/v1/streams") as resp:
        assert resp.status == 405 and resp.content_type == "application/problem+json"
    # The gateway is still serving.
    async with http.get(f"{base}/readyz") as resp:
        assert resp.status == 200


async def test_idle_stream_gets_heartbeats(cluster: Cluster,
                                           http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()  # heartbeat every second in tests
    sid = await create(http, base, generator="external")
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  stop_after_comments=2, idle_timeout=5)
    assert reply.comments == ["ping", "ping"]
    assert [e.event for e in reply.stream_events] == ["status"]


async def test_cancel_ends_a_running_stream_with_cancelled(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 500, "tokens_per_second": 20})
    url = f"{base}/v1/streams/{sid}/events"
    head = await sse_client.read(http, url, max_events=6)
    async with http.post(f"{base}/v1/streams/{sid}/cancel") as resp:
        assert resp.status == 202
    rest = await sse_client.read(http, url, last_event_id=head.last_id)
    whole = head.stream_events + rest.stream_events
    assert_contiguous(whole)
    assert whole[-1].event == "cancelled"
    assert sum(e.event in TERMINAL for e in whole) == 1
    assert len(whole) < 100, "the worker did not stop within a batch"
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        assert (await resp.json())["status"] == "cancelled"


async def test_fail_at_seq_ends_with_an_error_event(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 20, "tokens_per_second": 500,
                                            "fail_at_seq": 7})
    events = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
    assert_contiguous(events)
    assert events[-1].seq == 7 and events[-1].event == "error"
    error = events[-1].envelope["data"]
    assert error["code"] and error["message"] and error["retryable"] is False
    async with http.get(f"{base}/v1/streams/{sid}") as resp:
        assert (await resp.json())["status"] == "failed"


async def test_health_readiness_metrics_and_demo_page(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway()
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200
    async with http.get(f"{base}/readyz") as resp:
        assert resp.status == 200
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert "tidemark_sse_connections" in await resp.text()
    async with http.get(f"{base}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    # The page follows its stream with the JavaScript SDK, which the gateway serves.
    assert "/demo/assets/tidemark-client.js" in page and "/v1/streams" in page
    async with http.get(f"{base}/demo/assets/tidemark-client.js") as resp:
        assert resp.status == 200 and "javascript" in resp.content_type
        assert "eventSource" in await resp.text()


async def test_resume_older_than_the_memory_tail_catches_up_from_kafka_then_goes_live(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    # A memory tail of one byte holds nothing: every resume is read back from Kafka.
    base = await cluster.gateway(TIDEMARK_TAIL_BYTES="1")
    sid = await create(http, base, options={"tokens": 120, "tokens_per_second": 60})
    url = f"{base}/v1/streams/{sid}/events"
    head = await sse_client.read(http, url, max_events=10)
    await asyncio.sleep(0.5)  # the stream moves on while the client is away
    rest = await sse_client.read(http, url, last_event_id=head.last_id)

    whole = head.stream_events + rest.stream_events
    assert_contiguous(whole)
    assert whole[-1].event == "result"
    assert whole[-1].envelope["data"]["text"] == joined_chunks(whole)
    async with http.get(f"{base}/metrics") as resp:
        metrics = await resp.text()
    served = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines()
              if line.startswith("tidemark_backlog_events_total{")}
    assert served.get('source="kafka"', 0) > 0, metrics


@pytest.mark.parametrize(("setting", "reason"), [
    ("TIDEMARK_MAX_RESPONSE_SECONDS", "response lifetime reached"),
    ("TIDEMARK_IDLE_TIMEOUT", "no event for a while"),
])
async def test_long_or_idle_responses_end_cleanly_and_resume(
        cluster: Cluster, http: aiohttp.ClientSession, setting: str, reason: str) -> None:
    base = await cluster.gateway(**{setting: "2"})
    sid = await create(http, base, generator="external")
    url = f"{base}/v1/streams/{sid}/events"
    first = await sse_client.read(http, url, idle_timeout=10)
    assert first.ended_by_server
    assert any(reason in c for c in first.comments), first.comments
    await publish(http, base, sid, {"type": "result", "data": {"text": "done"}})
    rest = await sse_client.read(http, url, last_event_id=first.last_id)
    assert_contiguous(first.stream_events + rest.stream_events)
    assert rest.stream_events[-1].event == "result"
