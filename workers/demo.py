"""The ``demo`` generator: a deterministic stand-in for an LLM answer.

For a given query and options it always yields the same events: ``status`` running,
``metadata``, ``progress`` through its steps, one ``partial_result`` per token at
``tokens_per_second`` (on an absolute schedule; the first one ``first_token_ms`` later
than that, a model's time to first token), a last ``progress`` at 100 %, then ``result`` whose
``data.text`` is the chunks joined. ``fail_at_seq`` ends it with a terminal ``error``
at that seq instead.

A stream whose context asks for ``responseFormat: concise`` gets a shorter answer: a
quarter of the tokens (rounded up; the first words of the detailed answer) and no
intermediate progress steps (only 0 % and 100 %); ``metadata`` and ``result`` say which
format was made.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

from eventlog.jobs import Job
from schemas import events
from schemas.context import CONCISE, DETAILED
from workers.generators import Draft
from workers.pacing import Pacer, Schedule

DEFAULT_TOKENS: Final = 40
DEFAULT_RATE: Final = 20.0
MODEL: Final = "tidemark-demo-1"
#: How far behind its schedule the generator may run before it drops the lost time.
MAX_CATCH_UP_S: Final = 1.0

_WORDS: Final = (
    "the stream of events flows through kafka and every gateway serves it to readers who "
    "resume exactly where they stopped offsets are positions in an ordered log partitions "
    "keep each answer in order while workers write tokens progress and results durable "
    "transactions make every step atomic so nothing is lost or repeated on reconnect"
).split()


def demo_tokens(query: str, tokens: int) -> list[str]:
    """The chunks the demo generator streams for ``query``: words, space-separated."""
    out = []
    for i in range(tokens):
        digest = hashlib.blake2b(f"{query}\x00{i}".encode(), digest_size=4).digest()
        word = _WORDS[int.from_bytes(digest, "big") % len(_WORDS)]
        out.append(word if i == tokens - 1 else word + " ")
    return out


def demo_text(query: str, tokens: int = DEFAULT_TOKENS) -> str:
    return "".join(demo_tokens(query, tokens))


class DemoGenerator:
    name = "demo"

    def __init__(self) -> None:
        #: One timer per 5 ms slot for every stream of this generator, not one per token.
        self._pacer = Pacer()

    def plan(self, job: Job) -> Iterator[tuple[str, dict[str, Any], float]]:
        """Every event after seq 0 as (type, data, delay before it), in seq order."""
        tokens = int(job.options.get("tokens") or DEFAULT_TOKENS)
        rate = float(job.options.get("tokens_per_second") or DEFAULT_RATE)
        think = float(job.options.get("first_token_ms") or 0) / 1000
        fmt = (job.context.response_format if job.context is not None else None) or DETAILED
        if fmt == CONCISE:
            tokens = (tokens + 3) // 4
        chunks = demo_tokens(job.query, tokens)
        # Concise: one step (no progress between 0 % and 100 %).
        step_every = max(1, tokens // 10) if fmt != CONCISE else tokens
        steps = 1 + (tokens + step_every - 1) // step_every
        yield events.STATUS, {"state": "running", "message": "generating an answer"}, 0.0
        yield events.METADATA, {"model": MODEL, "query": job.query, "tokens": tokens,
                                "tokensPerSecond": rate, "responseFormat": fmt}, 0.0
        yield events.PROGRESS, {"percentage": 0, "estimatedTimeRemaining": tokens / rate,
                                "currentStep": "retrieving context", "completedSteps": 0}, 0.0
        for i, chunk in enumerate(chunks):
            yield events.PARTIAL_RESULT, {"chunk": chunk, "chunkIndex": i,
                                          "isComplete": i == tokens - 1}, \
                (think if i == 0 else 0.0) + 1.0 / rate
            done = i + 1
            if done % step_every == 0 and done < tokens:
                yield events.PROGRESS, {
                    "percentage": round(100 * done / tokens, 1),
                    "estimatedTimeRemaining": round((tokens - done) / rate, 3),
                    "currentStep": "generating", "completedSteps": done // step_every}, 0.0
        yield events.PROGRESS, {"percentage": 100, "estimatedTimeRemaining": 0,
                                "currentStep": "done", "completedSteps": steps}, 0.0
        yield events.RESULT, {"text": "".join(chunks), "tokens": tokens, "model": MODEL,
                              "responseFormat": fmt}, 0.0

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        """The plan from ``start_seq``, paced on an absolute schedule from the first
        yielded event: the n-th token is due n / ``tokens_per_second`` after it, so the
        time spent between tokens (writing them) does not slow the rate down. A
        generator that fell behind (a stalled process) catches up by at most
        ``MAX_CATCH_UP_S`` of tokens."""
        fail_at = job.options.get("fail_at_seq")
        schedule = Schedule(self._pacer, MAX_CATCH_UP_S)
        for seq, (kind, data, delay) in enumerate(self.plan(job), start=1):
            if seq < start_seq:
                continue
            await schedule.wait(delay)
            if fail_at is not None and seq >= fail_at:
                yield Draft(seq, events.ERROR, {
                    "code": "demo_failure", "retryable": False,
                    "message": f"the demo generator was asked to fail at seq {fail_at}"})
                return
            yield Draft(seq, kind, data)
