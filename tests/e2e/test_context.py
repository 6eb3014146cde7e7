"""Per-user context end to end (real gateway, worker and Kafka): batched partial
results that still resume exactly, metadata filtered for one subscriber only, the
concise answer, and query parameters over the stream's preferences."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.sse_client import Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: Gateways (with auth on, as by default) with a short batch interval.
GATEWAY = {"TIDEMARK_BATCH_INTERVAL_MS": "100"}
QUERY = "how does a batched subscriber resume?"


async def create_reply(http: aiohttp.ClientSession, base: str, *,
                       context: dict[str, Any] | None, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"query": QUERY, "options": options}
    if context is not None:
        body["context"] = context
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        assert resp.status == 201, await resp.text()
        reply: dict[str, Any] = await resp.json()
        return reply


async def create(http: aiohttp.ClientSession, base: str, *, context: dict[str, Any] | None,
                 **options: Any) -> str:
    return str((await create_reply(http, base, context=context, **options))["stream_id"])


def prefs(**p: Any) -> dict[str, Any]:
    return {"sessionId": "session-1", "preferences": p}


def seqs_of(event: Event) -> list[int]:
    """The seqs an event carries (a coalesced partial result carries several)."""
    data = event.envelope["data"]
    if event.event == "partial_result" and "chunkCount" in data:
        assert data["firstSeq"] + data["chunkCount"] - 1 == event.seq
        assert data["chunkIndex"] + data["chunkCount"] - 1 == data["lastChunkIndex"]
        return list(range(data["firstSeq"], event.seq + 1))
    return [event.seq]


def chunks(events: list[Event]) -> str:
    return "".join(e.envelope["data"]["chunk"] for e in events if e.event == "partial_result")


def partials(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event == "partial_result"]


def assert_exact_rest(before: Event, rest: list[Event], realtime: list[Event]) -> None:
    """``rest`` (a resume from ``before``'s id) is exactly the realtime sequence after
    the last seq ``before`` carried: nothing lost, nothing repeated."""
    last = seqs_of(before)[-1]
    covered = [s for e in rest for s in seqs_of(e)]
    assert covered == [e.seq for e in realtime if e.seq > last], (before, rest[:3])
    assert chunks(rest) == chunks([e for e in realtime if e.seq > last])
    assert rest[-1].event == "result"


async def test_batched_follower_gets_fewer_events_with_the_same_text_and_exact_resumes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    # The stream asks for batching; one follower overrides it with realtime.
    sid = await create(http, base, context=prefs(updateFrequency="batched"),
                       tokens=60, tokens_per_second=60)
    url = f"{base}/v1/streams/{sid}/events"
    batched_seen: list[Event] = []
    realtime_task = asyncio.create_task(sse_client.read(http, f"{url}?update_frequency=realtime"))
    batched_task = asyncio.create_task(sse_client.read(http, url, sink=batched_seen))

    # Live resumes: from each coalesced id as soon as it arrives, while the stream runs.
    live_resumes: list[tuple[Event, asyncio.Task[sse_client.Reply]]] = []
    looked = 0
    while looked < len(batched_seen) or not batched_task.done():
        for event in batched_seen[looked:]:
            if "chunkCount" in event.envelope["data"]:
                live_resumes.append((event, asyncio.create_task(
                    sse_client.read(http, url, last_event_id=event.id))))
        looked = len(batched_seen)
        await asyncio.sleep(0.01)
    realtime = (await realtime_task).stream_events
    batched = (await batched_task).stream_events

    assert [e.event for e in realtime].count("partial_result") == 60
    assert realtime[-1].event == "result"
    # The stream's first event carries its context, for every reader of the log.
    assert realtime[0].envelope["data"]["context"] == prefs(updateFrequency="batched")
    # Fewer partial results, the same text, the other events unchanged and in order.
    assert 1 < len(partials(batched)) < 30
    assert chunks(batched) == chunks(realtime) == realtime[-1].envelope["data"]["text"]
    assert [s for e in batched for s in seqs_of(e)] == [e.seq for e in realtime]
    assert [e.data for e in batched if e.event != "partial_result"] == \
        [e.data for e in realtime if e.event != "partial_result"]
    coalesced = [e for e in batched if "chunkCount" in e.envelope["data"]]
    assert coalesced
    for event in coalesced:
        # Its id is the last chunk's: the realtime follower got that id for that seq.
        assert event.id == next(e.id for e in realtime if e.seq == event.seq)

    assert len(live_resumes) == len(coalesced)
    for before, task in live_resumes:
        reply = await task
        assert_exact_rest(before, reply.stream_events, realtime)
    # Backlog resumes: from each coalesced id once the stream has ended.
    for before in coalesced:
        reply = await sse_client.read(http, url, last_event_id=before.id)
        assert reply.status == 200
        rest = reply.stream_events
        assert_exact_rest(before, rest, realtime)
        # The backlog is batched too.
        if len([e for e in realtime if e.seq > before.seq and e.event == "partial_result"]) > 1:
            assert len(partials(rest)) < len(partials([e for e in realtime if e.seq > before.seq]))


async def test_a_batched_follower_reconnecting_on_every_response_end_gets_each_chunk_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """The gateway ends each response after 0.3 s (what a load balancer's lifetime does);
    the client resumes from its last id each time, as an EventSource would."""
    cluster.worker()
    base = await cluster.gateway(**{**GATEWAY, "TIDEMARK_MAX_RESPONSE_SECONDS": "0.3",
                                    "TIDEMARK_BATCH_INTERVAL_MS": "200"})
    sid = await create(http, base, context=prefs(updateFrequency="batched"),
                       tokens=60, tokens_per_second=40)
    url = f"{base}/v1/streams/{sid}/events"
    got: list[Event] = []
    responses = 0
    while not got or got[-1].event != "result":
        reply = await sse_client.read(http, url, last_event_id=got[-1].id if got else None)
        assert reply.status == 200 and reply.ended_by_server
        got += reply.stream_events
        responses += 1
    assert responses >= 4
    realtime = (await sse_client.read(http, f"{url}?update_frequency=realtime")).stream_events
    assert [s for e in got for s in seqs_of(e)] == [e.seq for e in realtime]
    assert chunks(got) == chunks(realtime)
    assert len(partials(got)) < 60


async def test_include_metadata_false_drops_metadata_for_that_subscriber_only(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    sid = await create(http, base, context=None, tokens=20, tokens_per_second=200)
    url = f"{base}/v1/streams/{sid}/events"
    without, with_ = await asyncio.gather(
        sse_client.read(http, f"{url}?include_metadata=false"), sse_client.read(http, url))
    everything = with_.stream_events
    assert [e.event for e in everything].count("metadata") == 1
    assert "metadata" not in [e.event for e in without.stream_events]
    assert [e for e in everything if e.event != "metadata"] == without.stream_events

    # A resume from the id just before the dropped metadata event continues after it.
    meta_at = next(i for i, e in enumerate(everything) if e.event == "metadata")
    rest = await sse_client.read(http, f"{url}?include_metadata=false",
                                 last_event_id=everything[meta_at - 1].id)
    assert rest.stream_events == [e for e in everything[meta_at:] if e.event != "metadata"]
    # And from the dropped event's own id (one a realtime follower saw).
    rest = await sse_client.read(http, f"{url}?include_metadata=false",
                                 last_event_id=everything[meta_at].id)
    assert rest.stream_events == everything[meta_at + 1:]


async def test_query_parameters_override_the_streams_preferences(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    sid = await create(http, base, context=prefs(updateFrequency="batched",
                                                 includeMetadata=False),
                       tokens=30, tokens_per_second=300)
    url = f"{base}/v1/streams/{sid}/events"
    default = await sse_client.read(http, url)
    overridden = await sse_client.read(
        http, f"{url}?update_frequency=realtime&include_metadata=true")
    metadata_only = await sse_client.read(http, f"{url}?include_metadata=true")

    assert "metadata" not in [e.event for e in default.stream_events]
    assert len(partials(default.stream_events)) < 30
    assert [e.event for e in overridden.stream_events].count("metadata") == 1
    assert len(partials(overridden.stream_events)) == 30
    assert [e.event for e in metadata_only.stream_events].count("metadata") == 1
    assert len(partials(metadata_only.stream_events)) < 30
    assert chunks(default.stream_events) == chunks(overridden.stream_events) == \
        chunks(metadata_only.stream_events)
    # Any gateway applies the stream's preferences, also to a resume (whose fast path
    # finds the stream from its id alone): from its memory tail, and from Kafka by a
    # gateway that keeps no tail.
    other = await cluster.gateway(**GATEWAY, TIDEMARK_TAIL_BYTES="1")
    second = overridden.stream_events[1]
    assert second.event == "status"
    for gateway in (base, other):
        for last_event_id in (None, second.id):
            reply = await sse_client.read(http, f"{gateway}/v1/streams/{sid}/events",
                                          last_event_id=last_event_id)
            assert "metadata" not in [e.event for e in reply.stream_events]
            assert len(partials(reply.stream_events)) < 30
            assert chunks(reply.stream_events) == chunks(overridden.stream_events)


async def test_a_concise_stream_is_shorter_than_a_detailed_one(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    replies = {}
    for fmt in ("detailed", "concise"):
        sid = await create(http, base, context=prefs(responseFormat=fmt),
                           tokens=40, tokens_per_second=400)
        replies[fmt] = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
                        ).stream_events
    detailed, concise = replies["detailed"], replies["concise"]
    assert len(partials(detailed)) == 40 and len(partials(concise)) == 10
    assert len(concise) < len(detailed) // 2
    text = {fmt: r[-1].envelope["data"]["text"] for fmt, r in replies.items()}
    assert len(text["concise"]) < len(text["detailed"]) / 2
    assert text["detailed"].startswith(text["concise"])
    assert concise[-1].envelope["data"]["responseFormat"] == "concise"


async def test_a_browser_follows_the_read_token_url_with_its_preferences(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """What a page does: ``new EventSource(events_url + "&update_frequency=batched")``,
    with the answer's read token and no other credentials."""
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    reply = await create_reply(http, base, context=None, tokens=30, tokens_per_second=300)
    assert "?" in reply["events_url"]
    async with aiohttp.ClientSession() as browser:
        batched = await sse_client.read(
            browser, f"{base}{reply['events_url']}&update_frequency=batched&include_metadata=false")
        realtime = await sse_client.read(browser, f"{base}{reply['events_url']}")
    assert batched.status == 200 and realtime.status == 200
    assert len(partials(batched.stream_events)) < 30 == len(partials(realtime.stream_events))
    assert "metadata" not in [e.event for e in batched.stream_events]
    assert chunks(batched.stream_events) == chunks(realtime.stream_events)


@pytest.mark.parametrize("query", ["update_frequency=sometimes", "include_metadata=yes",
                                   "update_frequency=", "include_metadata=1"])
async def test_a_bad_preference_in_the_query_is_400(
        cluster: Cluster, http: aiohttp.ClientSession, query: str) -> None:
    base = await cluster.gateway(**GATEWAY)
    sid = await create(http, base, context=None)
    async with http.get(f"{base}/v1/streams/{sid}/events?{query}") as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
        assert body["parameter"] == query.split("=")[0] and body["detail"]


async def test_a_bad_context_in_the_create_body_is_422(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(**GATEWAY)
    body = {"query": QUERY, "context": {"preferences": {"updateFrequency": "hourly"}}}
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        assert resp.status == 422
        assert (await resp.json())["field"] == "/context/preferences/updateFrequency"
