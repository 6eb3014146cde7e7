"""The ``interactive`` generator: a demo answer that asks a question mid-way and
continues with the reply (talking back, ``workers.generators``).

For a given query, options and inputs it always yields the same events: ``status``
running, ``metadata``, the first half of the answer as ``partial_result`` tokens (the
``demo`` generator's words for the query, at ``tokens_per_second``), then the question:

    status {"state": "waiting_for_input", "message": <question>,
            "input": {"field": "answer", "choices": [...]}}

and it waits for the stream's next input (``POST /v1/streams/{id}/input`` with
``{"data": {"answer": "..."}}``; any object is taken: one without a string ``answer``
counts as the reply's JSON text). Then ``status`` running with the reply, the second half
(words drawn from the query *and* the reply), and ``result`` whose ``text`` is every
chunk joined and whose ``reply`` is the answer taken.

No reply within ``reply_timeout_s`` (an option; default 60 s, at most 600 s): the stream
ends with a terminal ``error`` ``{"code": "input_timeout", "retryable": false}``. A worker
that takes the stream over while it waits asks nothing again (the question is in the
log) and waits ``reply_timeout_s`` afresh. An input sent before the question comes is
the reply (inputs are read in log order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, Literal

import orjson

from eventlog.jobs import Job
from schemas import events
from workers.demo import MAX_CATCH_UP_S, demo_tokens
from workers.generators import Draft, Inputs
from workers.pacing import Pacer, Schedule

NAME: Final = "interactive"
MODEL: Final = "tidemark-interactive-1"
DEFAULT_TOKENS: Final = 20
DEFAULT_RATE: Final = 20.0
DEFAULT_REPLY_TIMEOUT_S: Final = 60.0
MAX_REPLY_TIMEOUT_S: Final = 600.0
QUESTION: Final = "Should the rest of the answer be about speed, safety or cost?"
CHOICES: Final = ("speed", "safety", "cost")

Step = tuple[str, dict[str, Any], float]


def reply_text(data: dict[str, Any]) -> str:
    """The answer an input gives: its string ``answer``, else the input's JSON."""
    answer = data.get("answer")
    return answer if isinstance(answer, str) else orjson.dumps(data).decode()


def reply_timeout(job: Job) -> float:
    raw = job.options.get("reply_timeout_s")
    value = DEFAULT_REPLY_TIMEOUT_S if raw is None else float(raw)
    return min(max(value, 0.0), MAX_REPLY_TIMEOUT_S)


def _split(tokens: int) -> tuple[int, int]:
    """How many tokens before the question and after it."""
    tokens = max(2, tokens)
    return tokens // 2, tokens - tokens // 2


def _tokens(job: Job) -> tuple[int, int]:
    return _split(int(job.options.get("tokens") or DEFAULT_TOKENS))


def _chunks(query: str, tokens: int, answer: str) -> tuple[list[str], list[str]]:
    """The chunks before the question and after it (the first part's last one ends in a
    space: the answer goes on)."""
    first, second = _split(tokens)
    head = demo_tokens(query, first)
    head[-1] += " "
    return head, demo_tokens(f"{query}\x00{answer}", second)


def interactive_text(query: str, tokens: int, answer: str) -> str:
    """The ``result`` text for ``query``, ``tokens`` and the reply's ``answer``."""
    head, tail = _chunks(query, tokens, answer)
    return "".join(head + tail)


class InteractiveGenerator:
    name = NAME
    takes_input: Literal[True] = True

    def __init__(self) -> None:
        self._pacer = Pacer()

    def before(self, job: Job) -> Iterator[Step]:
        """The events up to and including the question, as (type, data, delay)."""
        first, second = _tokens(job)
        rate = float(job.options.get("tokens_per_second") or DEFAULT_RATE)
        head, _ = _chunks(job.query, first + second, "")
        yield events.STATUS, {"state": "running", "message": "generating an answer"}, 0.0
        yield events.METADATA, {"model": MODEL, "query": job.query, "tokens": first + second,
                                "tokensPerSecond": rate,
                                "replyTimeoutSeconds": reply_timeout(job)}, 0.0
        for i, chunk in enumerate(head):
            yield events.PARTIAL_RESULT, {"chunk": chunk, "chunkIndex": i,
                                          "isComplete": False}, 1.0 / rate
        yield events.STATUS, {"state": "waiting_for_input", "message": QUESTION,
                              "input": {"field": "answer", "choices": list(CHOICES)}}, 0.0

    def after(self, job: Job, reply: dict[str, Any]) -> Iterator[Step]:
        """The events after the reply, as (type, data, delay)."""
        first, second = _tokens(job)
        rate = float(job.options.get("tokens_per_second") or DEFAULT_RATE)
        answer = reply_text(reply)
        head, tail = _chunks(job.query, first + second, answer)
        yield events.STATUS, {"state": "running", "message": f"continuing with: {answer}"}, 0.0
        for i, chunk in enumerate(tail):
            yield events.PARTIAL_RESULT, {"chunk": chunk, "chunkIndex": first + i,
                                          "isComplete": i == second - 1}, 1.0 / rate
        yield events.RESULT, {"text": "".join(head + tail), "tokens": first + second,
                              "model": MODEL, "reply": answer}, 0.0

    async def events(self, job: Job, start_seq: int, inputs: Inputs) -> AsyncIterator[Draft]:
        """``before``, the wait for the reply, ``after``: from ``start_seq`` on, paced
        like the demo generator (the schedule restarts after the wait)."""
        schedule = Schedule(self._pacer, MAX_CATCH_UP_S)
        seq = 0
        for kind, data, delay in self.before(job):
            seq += 1
            if seq >= start_seq:
                await schedule.wait(delay)
                yield Draft(seq, kind, data)
        timeout = reply_timeout(job)
        reply = await inputs.next(timeout)
        seq += 1
        if reply is None:
            yield Draft(seq, events.ERROR, {
                "code": "input_timeout", "retryable": False,
                "message": f"no reply came within {timeout:g} s"})
            return
        schedule.restart()
        for kind, data, delay in self.after(job, reply):
            if seq >= start_seq:
                await schedule.wait(delay)
                yield Draft(seq, kind, data)
            seq += 1
