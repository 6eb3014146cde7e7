"""The similar-query cache end to end: real gateway and worker processes on the session's
broker, the real embedding model. A paraphrase is answered by replaying the cached
stream into a new one with its own ids; scoping, invalidation (admin deletes, TTL,
retention, a generator-version change), a restart that rebuilds the index from the
topic, and a worker killed mid-replay."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_positions import delete_before, offset_of
from tests.e2e.test_streams import assert_contiguous
from tests.e2e.test_takeover import scrape
from tests.procs import Proc, auth_headers
from tests.sse_client import Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

QUERY = "How do I reset my password?"
PARAPHRASE = "What is the way to change my password?"
OPTIONS = {"tokens": 12, "tokens_per_second": 200}
ADMIN = auth_headers(scope="admin")


def cache_env(**extra: str) -> dict[str, str]:
    # The test pair scores 0.83: under the default threshold (0.85), over this one.
    return {"TIDEMARK_CACHE": "on", "TIDEMARK_CACHE_THRESHOLD": "0.8", **extra}


async def answer(http: aiohttp.ClientSession, base: str, query: str, *,
                 headers: dict[str, str] | None = None, **body: Any) -> tuple[str, list[Event]]:
    """Create a stream for ``query`` and read it to its end."""
    async with http.post(f"{base}/v1/streams", headers=headers,
                         json={"query": query, "options": OPTIONS, **body}) as resp:
        assert resp.status == 201, await resp.text()
        sid = str((await resp.json())["stream_id"])
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events", headers=headers)
    events = reply.stream_events
    assert_contiguous(events)
    assert events[-1].event == "result"
    return sid, events


def cache_marker(events: list[Event]) -> dict[str, Any] | None:
    """The replayed stream's cache ``metadata`` (seq 1), None for a generated stream."""
    data = events[1].envelope["data"]
    return data["cache"] if events[1].event == "metadata" and "cache" in data else None


def replayed(events: list[Event]) -> list[tuple[str, Any]]:
    return [(e.event, e.envelope["data"]) for e in events]


async def entries(http: aiohttp.ClientSession, worker: Proc, count: int) -> None:
    """Wait until the worker's index holds ``count`` entries."""
    for _ in range(200):
        got = (await scrape(http, worker.metrics_url)).get("tidemark_worker_cache_entries")
        if got == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the worker's cache index did not reach {count} entries: {got}")


async def test_a_paraphrase_replays_the_cached_stream_scoped_and_invalidated(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"  # one events partition: retention below
    worker = cluster.worker(**cache_env())
    base = await cluster.gateway()
    source, source_events = await answer(http, base, QUERY)
    assert cache_marker(source_events) is None
    await entries(http, worker, 1)

    # A paraphrase: its own stream and ids, a metadata event naming the source, then the
    # source's events with the same types and data.
    hit, hit_events = await answer(http, base, PARAPHRASE)
    marker = cache_marker(hit_events)
    assert marker is not None and marker["hit"] is True
    assert marker["sourceStream"] == source and marker["match"] == "similar"
    assert marker["similarity"] >= 0.8
    assert replayed(hit_events[2:]) == replayed(source_events[1:])
    assert {e.id for e in hit_events}.isdisjoint({e.id for e in source_events})
    assert all(e.envelope["stream"] == hit for e in hit_events)
    # Resumable like any stream: from its fifth event, the rest once each.
    rest = (await sse_client.read(http, f"{base}/v1/streams/{hit}/events",
                                  last_event_id=hit_events[4].id)).stream_events
    assert [e.id for e in rest] == [e.id for e in hit_events[5:]]

    # The same normalised query is an exact hit; the creator may opt out.
    _, exact = await answer(http, base, "  how do I RESET my password ")
    assert (cache_marker(exact) or {}).get("match") == "exact"
    _, opted_out = await answer(http, base, QUERY, cache={"use": False})
    assert cache_marker(opted_out) is None
    # Another tenant's identical query is a miss (and becomes that tenant's entry).
    _, theirs = await answer(http, base, QUERY, headers=auth_headers(tenant="globex"))
    assert cache_marker(theirs) is None
    await entries(http, worker, 2)

    # Admin delete by stream: the next paraphrase is generated (and cached anew).
    async with http.delete(f"{base}/v1/cache/streams/{source}", headers=ADMIN) as resp:
        assert resp.status == 200 and await resp.json() == {"deleted": 1}
    await entries(http, worker, 1)
    _, again = await answer(http, base, PARAPHRASE)
    assert cache_marker(again) is None
    await entries(http, worker, 2)
    # Admin delete by query (normalised), in the caller's tenant only: globex's stays.
    async with http.delete(f"{base}/v1/cache/entries",
                           params={"query": "WHAT is the way to change my password"},
                           headers=ADMIN) as resp:
        assert resp.status == 200 and await resp.json() == {"deleted": 1}
    async with http.delete(f"{base}/v1/cache/entries", params={"query": "?!"},
                           headers=ADMIN) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
    async with http.delete(f"{base}/v1/cache/streams/{source}") as resp:
        assert resp.status == 403  # the admin scope only
    await entries(http, worker, 1)
    _, after_delete = await answer(http, base, QUERY)
    assert cache_marker(after_delete) is None
    await entries(http, worker, 2)

    # Retention: once the cached stream's events are gone it is never served.
    await delete_before(cluster.bootstrap, f"tidemark.{cluster.namespace}.events",
                        offset_of(after_delete[-1].id or "") + 1)
    await asyncio.sleep(1.2)  # workers learn a partition's log start at most 1 s late
    _, after_retention = await answer(http, base, PARAPHRASE)
    assert cache_marker(after_retention) is None


async def test_a_restart_rebuilds_the_index_and_a_new_generator_version_misses(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    first = cluster.worker(**cache_env())
    base = await cluster.gateway()
    source, _ = await answer(http, base, QUERY)
    await entries(http, first, 1)
    first.stop()

    # A new worker process: the index comes back from the cache topic.
    second = cluster.worker(**cache_env())
    await entries(http, second, 1)
    _, hit = await answer(http, base, PARAPHRASE)
    assert (cache_marker(hit) or {}).get("sourceStream") == source
    second.stop()

    # The operator bumps the demo generator's version: its old answers are not served.
    bumped = cache_env(TIDEMARK_CACHE_GENERATOR_VERSIONS="demo=test-2")
    third = cluster.worker(**bumped)
    _, miss = await answer(http, base, PARAPHRASE)
    assert cache_marker(miss) is None
    await entries(http, third, 2)  # the new version's answer beside the old one
    third.stop()

    # TTL: with TIDEMARK_CACHE_TTL=3, that answer is not served once 3 s old.
    cluster.worker(**bumped, TIDEMARK_CACHE_TTL="3")
    await asyncio.sleep(3.2)
    _, expired = await answer(http, base, PARAPHRASE)
    assert cache_marker(expired) is None


async def test_a_worker_killed_mid_replay_another_finishes_it_exactly_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    first = cluster.worker(**cache_env())
    base = await cluster.gateway()
    options = {"tokens": 60, "tokens_per_second": 20}
    source, source_events = await answer(http, base, QUERY, options=options)
    await entries(http, first, 1)

    # Replayed at the source's own pace (3 s of tokens): killed a third of the way.
    async with http.post(f"{base}/v1/streams", json={
            "query": PARAPHRASE, "options": options, "cache": {"pacing": "original"}}) as resp:
        sid = str((await resp.json())["stream_id"])
    url = f"{base}/v1/streams/{sid}/events"
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(http, url, sink=seen, idle_timeout=60))
    await sse_client.wait_for(seen, 20, reader)
    first.kill()
    killed_at = len(seen)
    cluster.worker(**cache_env())
    await reader

    assert len(seen) > killed_at, "no event came after the takeover"
    assert_contiguous(seen)
    assert (cache_marker(seen) or {}).get("sourceStream") == source
    assert [e.event for e in seen].count("metadata") == 2  # the marker, the source's own
    assert replayed(seen[2:]) == replayed(source_events[1:])
    again = (await sse_client.read(http, url)).stream_events
    assert [e.id for e in again] == [e.id for e in seen]
