"""A stream's A/B variants, announced by the worker as the generation starts.

A stream in any experiment (its job's ``stream.experiments``, recorded at create) gets a
``metadata`` event ``{"experiments": {<experiment>: <variant>}}`` at seq 1, before the
generator's first event; the generator's events follow, each one seq later than the
generator numbers it (so the demo's ``fail_at_seq`` = n fails at the stream's seq n + 1).
Resumable like any generator: a resume from seq s asks the generator for its events from
s - 1 on. A stream in no experiment gets the generator's events unchanged. The variants'
generator ``options`` are already in the job (the gateway merged them at create).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from eventlog.jobs import Job
from schemas import events
from workers.generators import Draft

#: The seq of the announcement (seq 0 is the stream's ``queued`` status).
ANNOUNCE_SEQ = 1

Events = Callable[[Job, int], AsyncIterator[Draft]]


def announced(job: Job, start_seq: int, generate: Events) -> AsyncIterator[Draft]:
    """The stream's drafts from ``start_seq`` on: ``generate(job, start_seq)``, or, for
    a stream in an experiment, the announcement and then the generator's drafts."""
    if not job.stream.experiments:
        return generate(job, start_seq)
    return _announced(job, start_seq, generate)


async def _announced(job: Job, start_seq: int, generate: Events) -> AsyncIterator[Draft]:
    if start_seq <= ANNOUNCE_SEQ:
        yield Draft(ANNOUNCE_SEQ, events.METADATA, {"experiments": dict(job.stream.experiments)})
    inner = generate(job, max(ANNOUNCE_SEQ, start_seq - 1))
    try:
        async for draft in inner:
            yield Draft(draft.seq + 1, draft.type, draft.data)
    finally:
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
