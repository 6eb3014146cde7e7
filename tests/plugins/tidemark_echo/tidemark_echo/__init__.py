"""Test plugins: the ``echo`` and ``spell`` generators and the ``shout`` processor.

The ``echo`` generator: ``status`` running, then the query's words (cycled to
``tokens`` chunks) as ``partial_result`` events at ``tokens_per_second``, then
``result`` with the chunks joined. Deterministic: resumed from any seq it yields what it
would have yielded the first time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from eventlog.contentpolicy import Spec
from eventlog.jobs import Job
from workers.generators import Draft
from workers.processors import Output


def echo_chunks(query: str, tokens: int) -> list[str]:
    words = query.split() or ["echo"]
    return [words[i % len(words)] + ("" if i == tokens - 1 else " ") for i in range(tokens)]


class EchoGenerator:
    name = "echo"

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        async for draft in _paced(job, start_seq, echo_chunks, "echoing", self.name):
            yield draft


async def _paced(job: Job, start_seq: int, chunking: Callable[[str, int], list[str]],
                 message: str, generator: str, *, complete: bool = False,
                 ) -> AsyncIterator[Draft]:
    """``status`` running, the query's chunks (``chunking``) as ``partial_result`` events
    at ``tokens_per_second`` (``complete``: with ``isComplete``), then ``result``."""
    tokens = int(job.options.get("tokens") or 10)
    delay = 1.0 / float(job.options.get("tokens_per_second") or 10.0)
    chunks = chunking(job.query, tokens)
    plan: list[tuple[str, dict[str, Any]]] = [
        ("status", {"state": "running", "message": message})]
    plan += [("partial_result", {"chunk": c, "chunkIndex": i,
                                 **({"isComplete": i == tokens - 1} if complete else {})})
             for i, c in enumerate(chunks)]
    plan.append(("result", {"text": "".join(chunks), "generator": generator}))
    for seq, (kind, data) in enumerate(plan, start=1):
        if seq < start_seq:
            continue
        if kind == "partial_result":
            await asyncio.sleep(delay)
        yield Draft(seq, kind, data)


def spell_chunks(query: str, tokens: int, size: int = 3) -> list[str]:
    """The query in pieces of ``size`` grapheme clusters (never a split character,
    emoji sequence or combining mark), cycled to ``tokens`` pieces."""
    import regex

    clusters = regex.findall(r"\X", query) or ["."]
    pieces = ["".join(clusters[i:i + size]) for i in range(0, len(clusters), size)]
    return [pieces[i % len(pieces)] for i in range(tokens)]


class SpellGenerator:
    """``spell``: like ``echo``, in pieces of three grapheme clusters instead of words
    (so terms are split across chunks at places a word split would not)."""

    name = "spell"

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        async for draft in _paced(job, start_seq, spell_chunks, "spelling", self.name,
                                  complete=True):
            yield draft


class _ShoutRun:
    def process(self, event: Output) -> list[Output]:
        data = dict(event.data)
        for key in ("chunk", "text"):
            if isinstance(data.get(key), str):
                data[key] = data[key].upper()
        return [Output(event.type, data)]

    def state(self) -> dict[str, Any]:
        return {}


class ShoutProcessor:
    """``shout``: a content processor that upper-cases every chunk and the result."""

    name = "shout"

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> _ShoutRun:
        return _ShoutRun()
