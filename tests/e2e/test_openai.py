"""The ``openai`` generator through a real worker, gateway and broker, against a
chat-completions endpoint the test runs (tests/openai_upstream.py): a 429 then an answer
streams to its result; a worker SIGKILLed mid-answer hands the stream to another, which
ends it with the documented ``generation_interrupted`` error (retryable), every event id
once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.openai_upstream import KEY, MODEL, Upstream, answer_chunks, serving
from tests.procs import checkout_entry_points
from tests.sse_client import Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with serving() as server:
        yield server


def openai_env(upstream: Upstream, tmp_path: Path) -> dict[str, str]:
    return {**checkout_entry_points(tmp_path / "entry-points"),
            "TIDEMARK_OPENAI_URL": upstream.url, "TIDEMARK_OPENAI_MODEL": "m1",
            "TIDEMARK_OPENAI_API_KEY": KEY, "TIDEMARK_OPENAI_MAX_RETRY_AFTER": "2"}


async def test_an_answer_after_a_429_streams_to_its_result(
        cluster: Cluster, http: aiohttp.ClientSession, upstream: Upstream,
        tmp_path: Path) -> None:
    env = openai_env(upstream, tmp_path)
    worker = cluster.worker(**env)
    base = await cluster.gateway(**env)
    query = "busy=1 retry_after=1 chunks=12"
    sid = await create(http, base, query=query, generator="openai")
    seen = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
    assert_contiguous(seen)
    assert [e.event for e in seen] == (["status"] * 2 + ["metadata"] + ["partial_result"] * 12
                                       + ["metadata", "result"])
    assert joined_chunks(seen) == "".join(answer_chunks(query))
    assert seen[-2].envelope["data"]["usage"]["completionTokens"] == 12
    assert seen[-1].envelope["data"] == {"text": "".join(answer_chunks(query)), "model": MODEL,
                                         "finishReason": "stop", "tokens": 12}
    assert len(upstream.requests) == 2 and upstream.auth == [f"Bearer {KEY}"] * 2
    assert KEY not in worker.logs(10_000)


async def test_a_worker_killed_mid_answer_ends_it_with_a_retryable_error_once(
        cluster: Cluster, http: aiohttp.ClientSession, upstream: Upstream,
        tmp_path: Path) -> None:
    env = openai_env(upstream, tmp_path)
    first = cluster.worker(**env)
    base = await cluster.gateway(**env)
    sid = await create(http, base, query="chunks=400 delay=0.05", generator="openai")
    url = f"{base}/v1/streams/{sid}/events"
    seen: list[Event] = []
    reader = asyncio.create_task(sse_client.read(http, url, sink=seen, idle_timeout=60))
    await sse_client.wait_for(seen, 20, reader)
    first.kill()
    cluster.worker(**env)
    await reader

    assert_contiguous(seen)
    last = seen[-1]
    assert last.event == "error"
    assert last.envelope["data"]["code"] == "generation_interrupted"
    assert last.envelope["data"]["retryable"] is True
    # The text before the kill stays: the committed chunks, in order, none twice.
    chunks = [e.envelope["data"]["chunk"] for e in seen if e.event == "partial_result"]
    assert len(chunks) >= 17 and chunks == answer_chunks("chunks=400")[:len(chunks)]
    assert len(upstream.requests) == 1  # the new owner did not ask the model again
    again = (await sse_client.read(http, url)).stream_events
    assert [e.id for e in again] == [e.id for e in seen]
    assert len({e.id for e in seen}) == len(seen)
