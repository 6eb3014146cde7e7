"""The demo generator: deterministic, resumable, one terminal event, at the end."""

from __future__ import annotations

from typing import Any

import pytest

from eventlog.index import StreamInfo
from eventlog.jobs import Job
from schemas import events
from workers.demo import DemoGenerator, demo_text, demo_tokens
from workers.generators import Draft

FAST = 100_000  # tokens per second: the run takes about a millisecond


def job(query: str = "why is the sky blue?", **options: Any) -> Job:
    info = StreamInfo(stream_id="s1", namespace="default", topic="tidemark.default.events",
                      partition=0, first_offset=0, generator="demo", status="running",
                      created_at=0, updated_at=0)
    return Job(stream=info, query=query,
               options={"tokens": 12, "tokens_per_second": FAST, **options})


async def run(j: Job, start_seq: int = 1) -> list[Draft]:
    return [d async for d in DemoGenerator().events(j, start_seq)]


def of_type(drafts: list[Draft], event_type: str) -> list[Draft]:
    return [d for d in drafts if d.type == event_type]


async def test_same_query_and_options_give_identical_drafts() -> None:
    assert await run(job("q1")) == await run(job("q1"))


async def test_a_new_generator_object_gives_the_same_drafts() -> None:
    j = job("q1", tokens=30)
    first = [d async for d in DemoGenerator().events(j, 1)]
    second = [d async for d in DemoGenerator().events(j, 1)]
    assert first == second


async def test_different_queries_give_different_text() -> None:
    a = of_type(await run(job("what is kafka?", tokens=20)), events.RESULT)[0]
    b = of_type(await run(job("what is a log?", tokens=20)), events.RESULT)[0]
    assert a.data["text"] != b.data["text"]
    assert demo_text("what is kafka?", 20) != demo_text("what is a log?", 20)


@pytest.mark.parametrize("tokens", [1, 2, 12, 25, 40])
async def test_seqs_are_contiguous_from_one(tokens: int) -> None:
    drafts = await run(job(tokens=tokens))
    assert [d.seq for d in drafts] == list(range(1, len(drafts) + 1))


@pytest.mark.parametrize("tokens", [1, 12, 25])
async def test_exactly_one_terminal_event_and_it_is_last(tokens: int) -> None:
    drafts = await run(job(tokens=tokens))
    terminal = [d for d in drafts if events.is_terminal(d.type)]
    assert terminal == [drafts[-1]]
    assert drafts[-1].type == events.RESULT


async def test_first_event_is_status_running() -> None:
    first = (await run(job()))[0]
    assert (first.seq, first.type, first.data["state"]) == (1, events.STATUS, "running")


@pytest.mark.parametrize("tokens", [1, 7, 12, 25])
async def test_result_text_is_the_joined_chunks(tokens: int) -> None:
    query = "explain resumable streams"
    drafts = await run(job(query, tokens=tokens))
    chunks = of_type(drafts, events.PARTIAL_RESULT)
    assert len(chunks) == tokens
    assert [c.data["chunkIndex"] for c in chunks] == list(range(tokens))
    assert [c.data["isComplete"] for c in chunks] == [False] * (tokens - 1) + [True]
    text = "".join(c.data["chunk"] for c in chunks)
    assert drafts[-1].data["text"] == text
    assert text == demo_text(query, tokens)
    assert [c.data["chunk"] for c in chunks] == demo_tokens(query, tokens)
    assert len(text.split(" ")) == tokens


async def test_resuming_from_any_seq_yields_the_suffix() -> None:
    j = job(tokens=15)
    full = await run(j)
    for k in range(1, len(full) + 2):
        assert await run(j, start_seq=k) == full[k - 1:], k


@pytest.mark.parametrize("fail_at", [1, 2, 5, 9])
async def test_fail_at_seq_ends_with_an_error_at_that_seq(fail_at: int) -> None:
    j = job(fail_at_seq=fail_at)
    drafts = await run(j)
    normal = await run(job())
    assert [d.seq for d in drafts] == list(range(1, fail_at + 1))
    # Everything before the failure is the normal run.
    assert drafts[:-1] == normal[:fail_at - 1]
    last = drafts[-1]
    assert last.type == events.ERROR
    assert isinstance(last.data["code"], str) and last.data["code"]
    assert isinstance(last.data["message"], str) and last.data["message"]
    assert isinstance(last.data["retryable"], bool)
    assert [d for d in drafts if events.is_terminal(d.type)] == [last]


async def test_fail_at_the_last_seq_replaces_the_result() -> None:
    n = len(await run(job()))
    drafts = await run(job(fail_at_seq=n))
    assert len(drafts) == n
    assert drafts[-1].type == events.ERROR
    assert not of_type(drafts, events.RESULT)


async def test_fail_at_seq_beyond_the_end_completes_normally() -> None:
    normal = await run(job())
    assert await run(job(fail_at_seq=len(normal) + 1)) == normal


async def test_resuming_a_failing_job_yields_the_suffix() -> None:
    j = job(fail_at_seq=6)
    full = await run(j)
    for k in range(1, 7):
        assert await run(j, start_seq=k) == full[k - 1:], k


@pytest.mark.parametrize("tokens", [1, 3, 12, 25, 40])
async def test_progress_is_non_decreasing_and_ends_at_100(tokens: int) -> None:
    drafts = await run(job(tokens=tokens))
    progress = of_type(drafts, events.PROGRESS)
    percentages = [p.data["percentage"] for p in progress]
    assert percentages, "no progress events"
    assert percentages == sorted(percentages)
    assert all(0 <= p <= 100 for p in percentages)
    assert percentages[-1] == 100
    steps = [p.data["completedSteps"] for p in progress]
    assert steps == sorted(steps)
    # The 100 % progress comes after the last chunk and before the result.
    assert drafts[-2] == progress[-1]
    last_chunk = of_type(drafts, events.PARTIAL_RESULT)[-1]
    assert last_chunk.seq < progress[-1].seq


async def test_first_token_ms_delays_the_first_token_only() -> None:
    plan = list(DemoGenerator().plan(job(first_token_ms=800)))
    delays = [delay for kind, _, delay in plan if kind == events.PARTIAL_RESULT]
    assert delays[0] == pytest.approx(0.8 + 1 / FAST)
    assert set(delays[1:]) == {1 / FAST}
    assert [d for _, _, d in plan if d] == delays  # nothing else waits
    # The answer is the same, only later.
    assert [(k, d) for k, d, _ in plan] == [(k, d) for k, d, _ in DemoGenerator().plan(job())]
