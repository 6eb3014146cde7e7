"""The ``openai`` generator against a real chat-completions endpoint on loopback
(tests/openai_upstream.py): deltas, usage and finish map to events; a 429 is retried
after its Retry-After; a mid-stream disconnect, a refusal and a takeover end the stream
with the documented ``error``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventlog.index import StreamInfo
from eventlog.jobs import Job
from eventlog.settings import OpenAISettings, Settings
from schemas import events
from schemas.validation import Validators
from tests.openai_upstream import KEY, MODEL, Upstream, answer_chunks, serving
from workers.generators import Draft
from workers.openai import OpenAIGenerator, retry_after


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with serving() as server:
        yield server


def job(query: str, **options: Any) -> Job:
    info = StreamInfo(stream_id="s1", namespace="default", topic="tidemark.default.events",
                      partition=0, first_offset=0, generator="openai", status="running",
                      created_at=0, updated_at=0)
    return Job(stream=info, query=query, options=options)


def generator(url: str, **settings: Any) -> OpenAIGenerator:
    cfg = OpenAISettings(**{"url": url, "model": "m1", "api_key": KEY, "retries": 2,
                            "max_retry_after_s": 5.0, **settings})
    return OpenAIGenerator(Settings(openai=cfg))


VALIDATORS = Validators()


async def run(gen: OpenAIGenerator, j: Job, start_seq: int = 1) -> list[Draft]:
    drafts = [d async for d in gen.events(j, start_seq)]
    assert [d.seq for d in drafts] == list(range(start_seq, start_seq + len(drafts)))
    for d in drafts:
        VALIDATORS.check(d.type, d.data)
    return drafts


def text_of(drafts: list[Draft]) -> str:
    return "".join(d.data["chunk"] for d in drafts if d.type == events.PARTIAL_RESULT)


async def test_an_answer_streams_as_partial_results_then_usage_and_result(
        upstream: Upstream) -> None:
    query = "tell me chunks=6"
    history = [{"role": "system", "content": "be brief"},
               {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    drafts = await run(generator(upstream.url), job(query, messages=history, max_tokens=50))
    assert [d.type for d in drafts] == (
        ["status", "metadata"] + ["partial_result"] * 6 + ["metadata", "result"])
    assert drafts[1].data == {"model": "m1", "query": query, "backend": "openai"}
    assert text_of(drafts) == "".join(answer_chunks(query))
    assert [d.data["chunkIndex"] for d in drafts[2:8]] == list(range(6))
    assert drafts[-2].data == {"model": MODEL, "usage": {
        "promptTokens": 3, "completionTokens": 6, "totalTokens": 9}}
    assert drafts[-1].data == {"text": "".join(answer_chunks(query)), "model": MODEL,
                               "finishReason": "stop", "tokens": 6}
    # What went upstream: the chat with the query last, streaming with usage, the key.
    assert upstream.requests == [{
        "model": "m1", "messages": [*history, {"role": "user", "content": query}],
        "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 50}]
    assert upstream.auth == [f"Bearer {KEY}"]


async def test_a_429_is_retried_after_its_retry_after(upstream: Upstream) -> None:
    query = "busy=2 retry_after=1 chunks=3"
    began = time.monotonic()
    drafts = await run(generator(upstream.url), job(query))
    assert time.monotonic() - began >= 2.0  # two waits of Retry-After: 1
    assert drafts[-1].type == events.RESULT
    assert drafts[-1].data["text"] == "w0 w1 w2 "
    assert len(upstream.requests) == 3


async def test_429s_past_the_retries_end_with_a_retryable_error(upstream: Upstream) -> None:
    drafts = await run(generator(upstream.url, retries=1, max_retry_after_s=0.1),
                       job("busy=5 retry_after=60"))
    assert len(upstream.requests) == 2  # Retry-After: 60 was cut to 0.1 s
    assert drafts[-1].type == events.ERROR
    assert drafts[-1].data["code"] == "upstream_rate_limited"
    assert drafts[-1].data["retryable"] is True
    assert "429" in drafts[-1].data["message"] and KEY not in drafts[-1].data["message"]


async def test_a_mid_stream_disconnect_ends_with_a_retryable_error_after_the_text(
        upstream: Upstream) -> None:
    drafts = await run(generator(upstream.url), job("chunks=10 disconnect=4"))
    assert text_of(drafts) == "w0 w1 w2 w3 "
    assert drafts[-1].type == events.ERROR
    assert drafts[-1].data["code"] == "upstream_disconnected"
    assert drafts[-1].data["retryable"] is True
    assert len(upstream.requests) == 1  # tokens were written: not asked again


async def test_a_4xx_other_than_429_is_not_retryable(upstream: Upstream) -> None:
    drafts = await run(generator(upstream.url), job("status=400"))
    assert drafts[-1].data["code"] == "upstream_rejected"
    assert drafts[-1].data["retryable"] is False
    assert "refused with 400" in drafts[-1].data["message"]
    assert len(upstream.requests) == 1


async def test_an_endpoint_that_does_not_answer_is_retryable() -> None:
    from tests.procs import free_port

    drafts = await run(generator(f"http://127.0.0.1:{free_port()}/v1", retries=1,
                                 max_retry_after_s=0.05), job("q"))
    assert drafts[-1].data["code"] == "upstream_unavailable"
    assert drafts[-1].data["retryable"] is True


async def test_no_url_configured_is_an_error_not_a_crash() -> None:
    drafts = await run(OpenAIGenerator(Settings()), job("q"))
    assert drafts[-1].data["code"] == "openai_not_configured"


async def test_a_takeover_after_tokens_ends_with_generation_interrupted(
        upstream: Upstream) -> None:
    drafts = await run(generator(upstream.url), job("chunks=5"), start_seq=6)
    assert drafts == [Draft(6, events.ERROR, {
        "code": "generation_interrupted", "retryable": True, "message": drafts[0].data[
            "message"]})]
    assert "3 chunks" in drafts[0].data["message"]
    assert upstream.requests == []


async def test_a_takeover_before_the_first_token_asks_afresh(upstream: Upstream) -> None:
    query = "chunks=3"
    full = await run(generator(upstream.url), job(query))
    resumed = await run(generator(upstream.url), job(query), start_seq=3)
    assert resumed == full[2:]


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
