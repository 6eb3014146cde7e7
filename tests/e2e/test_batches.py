"""Batch requests (``POST /v1/batches``) end to end: real gateway, real workers, real
broker. What a user checks: the batch stream tells progress, carries each child's events
tagged with its query, ends with the aggregate; it resumes exactly; a cancel ends the
children; a worker killed mid-batch loses nothing and repeats nothing; other tenants see
none of it; bad bodies get problems."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from schemas.batch import highlight
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, joined_chunks
from tests.procs import auth_headers, scrape
from tests.sse_client import Event
from workers.demo import demo_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

QUERIES = ["what is a tidemark?", "how do offsets work", "What  is a TIDEMARK?",
           "why kafka", "who reads the log"]


async def create_batch(http: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/v1/batches", json=body) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Location"] == f"/v1/streams/{(await resp.json())['stream_id']}"
        reply: dict[str, Any] = await resp.json()
    return reply


def child_events(events: list[Event]) -> list[dict[str, Any]]:
    """The children's events the batch stream forwarded (``metadata`` with ``child``)."""
    return [e.envelope["data"]["child"] for e in events
            if e.event == "metadata" and "child" in e.envelope["data"]]


async def until_forwarded(seen: list[Event], reader: asyncio.Task[Any], count: int,
                          timeout: float = 30) -> None:
    """Wait until the batch stream read so far holds ``count`` forwarded child events."""
    for _ in range(int(timeout / 0.05)):
        if len(child_events(seen)) >= count:
            return
        if reader.done():
            raise AssertionError(f"the read ended early: {reader.result()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} child events in {timeout}s")


async def read_all(http: aiohttp.ClientSession, base: str, sid: str,
                   last_event_id: str | None = None) -> list[Event]:
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                  last_event_id=last_event_id, idle_timeout=30)
    assert reply.status == 200, reply.body
    return reply.stream_events


async def test_a_batch_answers_each_query_once_tagged_resumable_and_private(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    options = {"tokens": 12, "tokens_per_second": 100}
    reply = await create_batch(http, base, queries=QUERIES, options=options,
                               strategy={"type": "parallel", "maxConcurrency": 2},
                               aggregation={"combineResults": True,
                                            "summaryType": "comprehensive"})
    children = reply["children"]
    assert [c["index"] for c in children] == [0, 1, 2, 3, 4]
    # The duplicate (index 2: the same query but case and spaces) shares index 0's stream.
    assert children[2]["stream_id"] == children[0]["stream_id"]
    assert children[2]["duplicate_of"] == 0
    assert reply["generated"] == 4 and reply["queries"] == 5
    assert len({c["stream_id"] for c in children}) == 4

    events = await read_all(http, base, reply["stream_id"])
    assert_contiguous(events)
    assert events[-1].event == "result"
    forwarded = child_events(events)
    # Every child's events reach the batch tagged with its queries; each child seq once.
    by_child: dict[str, list[int]] = {}
    for ev in forwarded:
        by_child.setdefault(ev["streamId"], []).append(ev["seq"])
    assert set(by_child) == {c["stream_id"] for c in children}
    for seqs in by_child.values():
        assert seqs == sorted(set(seqs))
    dup = [ev for ev in forwarded if ev["streamId"] == children[0]["stream_id"]]
    assert {tuple(ev["indices"]) for ev in dup} == {(0, 2)}
    assert {ev["type"] for ev in forwarded} >= {"status", "metadata", "progress", "result"}
    progress = [e.envelope["data"] for e in events if e.event == "progress"]
    assert [p["completedSteps"] for p in progress] == [0, 1, 2, 3, 4]
    assert progress[-1]["percentage"] == 100

    result = events[-1].envelope["data"]
    assert (result["completed"], result["queries"], result["generated"]) == (5, 5, 4)
    texts = [r["result"]["text"] for r in result["results"]]
    assert texts == [demo_text(q, 12) for q in
                     [QUERIES[0], QUERIES[1], QUERIES[0], QUERIES[3], QUERIES[4]]]
    assert result["text"] == "\n\n".join(texts)

    # Each child stream is a stream of its own, with its whole answer, generated once.
    for c in children[:2]:
        own = await read_all(http, base, c["stream_id"])
        assert_contiguous(own)
        assert own[-1].event == "result"
        assert joined_chunks(own) == demo_text(QUERIES[c["index"]], 12)

    # Resume the batch from the middle: exactly the rest.
    middle = events[len(events) // 2]
    rest = await read_all(http, base, reply["stream_id"], last_event_id=middle.id)
    assert [e.id for e in rest] == [e.id for e in events[len(events) // 2 + 1:]]

    # Another tenant sees neither the batch nor a child: 404, like a stream that is not.
    other = auth_headers(sub="tester", tenant="other")
    for sid in (reply["stream_id"], children[1]["stream_id"]):
        for path in (f"/v1/streams/{sid}", f"/v1/streams/{sid}/events"):
            async with http.get(base + path, headers=other) as resp:
                assert resp.status == 404, path
                assert resp.content_type == "application/problem+json"

    # Bad bodies: problems with a reason, nothing made.
    bad: list[tuple[Any, int, str]] = [
        ({"queries": []}, 422, "/queries"),
        ({"queries": ["q"] * 101}, 422, "/queries"),
        ({"queries": ["a", "b"], "strategy": {"type": "priority", "priorityWeights": [1]}},
         422, "/strategy/priorityWeights"),
        ({"queries": ["a"], "strategy": {"type": "fastest"}}, 422, "/strategy/type"),
        ({"queries": ["a"], "generator": "external"}, 422, "/generator"),
        ({"queries": ["a"], "generator": "batch"}, 422, "/generator"),
    ]
    for body, status, field in bad:
        async with http.post(f"{base}/v1/batches", json=body) as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == status, (body, problem)
            assert resp.content_type == "application/problem+json"
            assert problem["field"] == field and problem["detail"], problem
    async with http.post(f"{base}/v1/batches", data=b"{not json",
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    # A batch stream cannot be made through POST /v1/streams (its job names streams).
    async with http.post(f"{base}/v1/streams", json={"query": "q", "generator": "batch"}) as resp:
        assert resp.status == 422


async def test_highlights_and_priority_order(cluster: Cluster,
                                             http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    queries = ["low one", "high one", "middle one"]
    reply = await create_batch(
        http, base, queries=queries, options={"tokens": 6, "tokens_per_second": 200},
        strategy={"type": "priority", "priorityWeights": [1, 10, 5]},
        aggregation={"combineResults": True, "summaryType": "highlights"})
    events = await read_all(http, base, reply["stream_id"])
    # With the default concurrency every child starts at once (in weight order); with
    # one at a time the children end in weight order, highest first.
    result = events[-1].envelope["data"]
    assert result["summaryType"] == "highlights"
    assert [h["index"] for h in result["highlights"]] == [0, 1, 2]
    assert result["highlights"][1]["text"] == highlight(demo_text("high one", 6))
    seq_reply = await create_batch(
        http, base, queries=queries, options={"tokens": 6, "tokens_per_second": 200},
        strategy={"type": "priority", "priorityWeights": [1, 10, 5], "maxConcurrency": 1})
    seq_events = await read_all(http, base, seq_reply["stream_id"])
    ends = [ev["index"] for ev in child_events(seq_events) if ev["type"] == "result"]
    assert ends == [1, 2, 0]


async def test_cancelling_a_batch_cancels_its_children(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    reply = await create_batch(http, base, queries=["slow a", "slow b", "slow c"],
                               options={"tokens": 400, "tokens_per_second": 5},
                               strategy={"type": "sequential"})
    sid = reply["stream_id"]
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(
        http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=30))
    await until_forwarded(seen, reader, 1)
    async with http.post(f"{base}/v1/streams/{sid}/cancel") as resp:
        assert resp.status == 202
    got = await reader
    assert got.stream_events[-1].event == "cancelled"
    for child in reply["children"]:  # the running one and the two never started
        own = await read_all(http, base, child["stream_id"])
        assert own[-1].event == "cancelled", [e.event for e in own]
        async with http.get(f"{base}/v1/streams/{child['stream_id']}") as resp:
            assert (await resp.json())["status"] == "cancelled"


async def test_a_worker_killed_mid_batch_another_finishes_it_each_child_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    first = cluster.worker()
    base = await cluster.gateway()
    queries = [f"query number {i}" for i in range(4)]
    reply = await create_batch(http, base, queries=queries,
                               options={"tokens": 30, "tokens_per_second": 20},
                               strategy={"type": "parallel", "maxConcurrency": 2},
                               aggregation={"combineResults": True})
    sid = reply["stream_id"]
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(
        http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=60))
    await until_forwarded(seen, reader, 6)
    first.kill()
    second = cluster.worker()
    got = await reader
    # The batch itself was taken over mid-way (not only its children).
    log_text = second.out.read_text() + second.err.read_text()
    assert f"resuming stream {sid}" in log_text
    events = got.stream_events
    assert_contiguous(events)
    assert events[-1].event == "result"
    forwarded = child_events(events)
    pairs = [(ev["streamId"], ev["seq"]) for ev in forwarded]
    assert len(pairs) == len(set(pairs)), "a child event was forwarded twice"
    result = events[-1].envelope["data"]
    assert result["completed"] == 4
    assert [r["result"]["text"] for r in result["results"]] == [
        demo_text(q, 30) for q in queries]
    for child in reply["children"]:
        own = await read_all(http, base, child["stream_id"])
        assert_contiguous(own)
        assert joined_chunks(own) == demo_text(queries[child["index"]], 30)
        assert [e.event for e in own].count("result") == 1


async def test_a_batch_counts_every_stream_against_the_users_limit_all_or_none(
        cluster: Cluster, redis_url: str) -> None:
    base = await cluster.gateway(TIDEMARK_REDIS_URL=redis_url)
    headers = auth_headers(sub="batcher", limits={"maxConcurrentStreams": 4})
    async with aiohttp.ClientSession(headers=headers) as http:
        # 4 distinct queries are 5 streams (the batch too): past the limit of 4.
        async with http.post(f"{base}/v1/batches",
                             json={"queries": ["a", "b", "c", "d"]}) as resp:
            problem = await resp.json(content_type=None)
            assert resp.status == 429, problem
            assert problem["limit"] == "maxConcurrentStreams"
            assert resp.headers["Retry-After"] == "1"
        # Nothing was kept from it: 3 distinct queries (and a duplicate) fit exactly.
        reply = await create_batch(http, base, queries=["a", "b", "c", "A"])
        assert reply["generated"] == 3
        async with http.post(f"{base}/v1/streams", json={"query": "one more"}) as resp:
            assert resp.status == 429


async def test_similar_queries_in_a_batch_are_generated_once_and_replayed(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    from tests.e2e.test_cache import PARAPHRASE, QUERY, cache_marker

    # The cache's threshold as its own e2e tests set it (the pair's cosine is 0.83).
    worker = cluster.worker(TIDEMARK_CACHE="on", TIDEMARK_CACHE_THRESHOLD="0.8")
    base = await cluster.gateway()
    reply = await create_batch(http, base, queries=[QUERY, PARAPHRASE, "why kafka"],
                               options={"tokens": 12, "tokens_per_second": 100},
                               strategy={"type": "parallel"},
                               aggregation={"combineResults": True,
                                            "summaryType": "comprehensive"})
    events = await read_all(http, base, reply["stream_id"])
    assert events[-1].event == "result"
    first, similar, other = [await read_all(http, base, c["stream_id"])
                             for c in reply["children"]]
    assert cache_marker(first) is None and cache_marker(other) is None  # generated
    marker = cache_marker(similar)
    assert marker is not None and marker["hit"] and marker["match"] == "similar", marker
    assert marker["sourceStream"] == reply["children"][0]["stream_id"]
    assert marker["similarity"] >= 0.8, marker
    # The paraphrase's answer is the first query's, replayed from the log.
    assert similar[-1].envelope["data"]["text"] == first[-1].envelope["data"]["text"]
    assert first[-1].envelope["data"]["text"] == demo_text(QUERY, 12)
    assert other[-1].envelope["data"]["text"] == demo_text("why kafka", 12)
    # The batch embedded the three queries at once; each child's job carried its vector,
    # so the generated children's cache lookups (two misses) embedded nothing again.
    metrics = await scrape(http, worker.metrics_url)
    assert metrics['tidemark_worker_cache_lookups_total{outcome="miss"}'] == 2, metrics
    assert metrics.get("tidemark_worker_embedding_seconds_count", 0) == 0
