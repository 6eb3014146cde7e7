"""The interactive generator: deterministic around its question, resumable from any seq
(it replays the log's inputs), bounded wait; and the inputs a generator reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventlog.jobs import Job
from schemas import events
from tests.unit.test_demo import job as demo_job
from workers.demo import demo_tokens
from workers.generators import Draft, Inputs, takes_input
from workers.interactive import (
    CHOICES,
    QUESTION,
    InteractiveGenerator,
    reply_text,
    reply_timeout,
)


def job(query: str = "what is a log?", **options: Any) -> Job:
    """An interactive job of 10 tokens (the demo tests' job, fast)."""
    return demo_job(query, **{"tokens": 10, **options})


async def run(j: Job, replies: list[dict[str, Any]], start_seq: int = 1) -> list[Draft]:
    return [d async for d in InteractiveGenerator().events(j, start_seq, Inputs(replies))]


def question_seq(drafts: list[Draft]) -> int:
    return next(d.seq for d in drafts if d.data.get("state") == "waiting_for_input")


async def test_it_asks_then_continues_with_the_reply() -> None:
    drafts = await run(job(), [{"answer": "safety"}])
    assert [d.seq for d in drafts] == list(range(1, len(drafts) + 1))
    q = question_seq(drafts)
    asked = drafts[q - 1]
    assert asked.type == events.STATUS
    assert asked.data == {"state": "waiting_for_input", "message": QUESTION,
                          "input": {"field": "answer", "choices": list(CHOICES)}}
    before = [d for d in drafts[:q] if d.type == events.PARTIAL_RESULT]
    after = [d for d in drafts[q:] if d.type == events.PARTIAL_RESULT]
    assert len(before) == len(after) == 5
    assert [d.data["chunkIndex"] for d in before + after] == list(range(10))
    assert [d.data["isComplete"] for d in before + after] == [False] * 9 + [True]
    result = drafts[-1]
    assert result.type == events.RESULT and result.data["reply"] == "safety"
    assert result.data["text"] == "".join(d.data["chunk"] for d in before + after)
    tail = demo_tokens("what is a log?\x00safety", 5)
    assert [d.data["chunk"] for d in after] == tail
    assert drafts[q].data == {"state": "running", "message": "continuing with: safety"}


async def test_the_reply_changes_only_what_comes_after_the_question() -> None:
    speed = await run(job(), [{"answer": "speed"}])
    cost = await run(job(), [{"answer": "cost"}])
    q = question_seq(speed)
    assert speed[:q] == cost[:q]
    assert speed[-1].data["text"] != cost[-1].data["text"]
    assert await run(job(), [{"answer": "speed"}]) == speed  # deterministic


@pytest.mark.parametrize("start_seq", [1, 2, 5, 8, 9, 10, 14])
async def test_a_resume_from_any_seq_gives_the_rest_of_the_same_drafts(start_seq: int) -> None:
    whole = await run(job(), [{"answer": "cost"}])
    assert await run(job(), [{"answer": "cost"}], start_seq) == \
        [d for d in whole if d.seq >= start_seq]


async def test_only_the_first_input_is_the_reply() -> None:
    drafts = await run(job(), [{"answer": "cost"}, {"answer": "speed"}])
    assert drafts[-1].data["reply"] == "cost"


async def test_no_reply_in_time_ends_with_an_input_timeout_error() -> None:
    drafts = await run(job(reply_timeout_s=0.05), [])
    assert drafts[-1].type == events.ERROR
    assert drafts[-1].data["code"] == "input_timeout"
    assert drafts[-1].data["retryable"] is False
    assert drafts[-1].seq == question_seq(drafts) + 1
    assert not [d for d in drafts if d.type == events.RESULT]


async def test_a_reply_that_comes_while_it_waits_is_taken() -> None:
    inputs = Inputs()
    gen = InteractiveGenerator().events(job(), 1, inputs)
    seen = []
    async for draft in gen:
        seen.append(draft)
        if draft.data.get("state") == "waiting_for_input":
            asyncio.get_running_loop().call_later(0.05, inputs.put, {"answer": "speed"})
    assert seen[-1].data["reply"] == "speed"
    assert inputs.read == 1


def test_reply_text_and_timeout_options() -> None:
    assert reply_text({"answer": "x"}) == "x"
    assert reply_text({"answer": 3}) == '{"answer":3}'
    assert reply_timeout(job()) == 60
    assert reply_timeout(job(reply_timeout_s=5)) == 5
    assert reply_timeout(job(reply_timeout_s=10_000)) == 600
    assert reply_timeout(job(reply_timeout_s=-1)) == 0


def test_only_the_interactive_generator_takes_input() -> None:
    from workers.demo import DemoGenerator
    assert takes_input(InteractiveGenerator())
    assert not takes_input(DemoGenerator())


async def test_inputs_are_read_in_order_each_once_and_wait_bounded() -> None:
    inputs = Inputs([{"n": 1}])
    inputs.put({"n": 2})
    assert await inputs.next(1) == {"n": 1}
    assert await inputs.next(1) == {"n": 2}
    assert await inputs.next(0.01) is None
    assert inputs.read == 2
