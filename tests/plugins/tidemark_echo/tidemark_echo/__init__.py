"""The ``echo`` generator: ``status`` running, then the query's words (cycled to
``tokens`` chunks) as ``partial_result`` events at ``tokens_per_second``, then
``result`` with the chunks joined. Deterministic: resumed from any seq it yields what it
would have yielded the first time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from eventlog.jobs import Job
from workers.generators import Draft


def echo_chunks(query: str, tokens: int) -> list[str]:
    words = query.split() or ["echo"]
    return [words[i % len(words)] + ("" if i == tokens - 1 else " ") for i in range(tokens)]


class EchoGenerator:
    name = "echo"

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        tokens = int(job.options.get("tokens") or 10)
        delay = 1.0 / float(job.options.get("tokens_per_second") or 10.0)
        chunks = echo_chunks(job.query, tokens)
        plan: list[tuple[str, dict[str, Any]]] = [
            ("status", {"state": "running", "message": "echoing"})]
        plan += [("partial_result", {"chunk": c, "chunkIndex": i}) for i, c in enumerate(chunks)]
        plan.append(("result", {"text": "".join(chunks), "generator": "echo"}))
        for seq, (kind, data) in enumerate(plan, start=1):
            if seq < start_seq:
                continue
            if kind == "partial_result":
                await asyncio.sleep(delay)
            yield Draft(seq, kind, data)
