"""Predictive warm-up end to end: a worker learns a tenant's follow-up queries from the
jobs topics, pre-generates the follow-up after a user's first query, and the user's
follow-up is then answered from the cache at once. Another tenant learns nothing from it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_cache import OPTIONS, answer, cache_marker, entries
from tests.e2e.test_takeover import scrape
from tests.procs import Proc, auth_headers

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FIRST = "How do I reset my password?"
FOLLOW_UP = "The reset email never arrived"
WARMED = 'tidemark_worker_warmup_streams_total{why="follow-up"}'


async def warmed(http: aiohttp.ClientSession, worker: Proc) -> float:
    return (await scrape(http, worker.metrics_url)).get(WARMED, 0.0)


async def test_a_predicted_follow_up_is_pre_generated_and_answered_from_the_cache(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cache = {"TIDEMARK_CACHE": "on"}
    history_worker = cluster.worker(**cache)
    base = await cluster.gateway()
    # The log of past queries: three users each asked the follow-up after the first
    # query (opted out of the cache, so that nothing of theirs is cached).
    made = set()
    for user in ("u1", "u2", "u3"):
        for query in (FIRST, FOLLOW_UP):
            sid, _ = await answer(http, base, query, headers=auth_headers(sub=user),
                                  cache={"use": False})
            made.add(sid)
    history_worker.stop()

    worker = cluster.worker(**cache, TIDEMARK_WARMUP="on")
    assert await warmed(http, worker) == 0  # history is learnt, not acted on
    sid, _ = await answer(http, base, FIRST, headers=auth_headers(sub="u9"))
    made.add(sid)
    for _ in range(200):
        if await warmed(http, worker) == 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the follow-up was not pre-generated")
    await entries(http, worker, 2)  # the first answer and the pre-generated follow-up

    async with http.post(f"{base}/v1/streams", headers=auth_headers(sub="u9"),
                         json={"query": FOLLOW_UP, "options": OPTIONS}) as resp:
        follow = (await resp.json())["stream_id"]
    reply = await sse_client.read(http, f"{base}/v1/streams/{follow}/events",
                                  headers=auth_headers(sub="u9"))
    marker = cache_marker(reply.stream_events)
    assert marker is not None and marker["hit"] and marker["match"] == "exact", marker
    assert marker["sourceStream"] not in made  # the warm-up's own stream
    assert reply.stream_events[-1].event == "result"

    # Another tenant asks the same first query: it has no history, nothing is predicted.
    other = auth_headers(sub="g1", tenant="globex")
    await answer(http, base, FIRST, headers=other)
    await asyncio.sleep(1.0)
    assert await warmed(http, worker) == 1
    metrics = await scrape(http, worker.metrics_url)
    assert metrics.get('tidemark_worker_warmup_streams_total{why="hot"}', 0) == 0
