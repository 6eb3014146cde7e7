"""The generator protocol.

A generator turns a job into a stream's events, resumably: ``events(job, start_seq)``
yields exactly the events it would have yielded the first time, from ``start_seq``
on. A worker that takes over a stream resumes it from the last committed seq + 1.

Talking back. A generator whose class sets ``takes_input = True``
(:class:`InteractiveGenerator`) is called as ``events(job, start_seq, inputs)`` and may
wait for the stream's inputs with ``await inputs.next(timeout)``. The worker writes each
input a client sends into the stream as an ``input`` event (in its own transactional
outbox, so the seq is the worker's) and then hands its ``data`` to :class:`Inputs`, so
the inputs a generator reads are exactly the stream's ``input`` events, in log order.
After a takeover the new owner's :class:`Inputs` starts with the inputs already in the
log (the generator replays them: it is deterministic, its events after an input depend
only on the job and the inputs before them), then the ones it had not consumed, each
written once. Other generators' streams take inputs too (they are written into the log,
every follower sees them); the generator does not read them.

Seqs. A generator numbers its own events: 1, 2, ... as if the stream held no inputs.
The worker writes them at the stream's next seq, after any inputs written meanwhile, so
stream seq = the generator's seq + the number of input events before it (the same
numbers for a stream without inputs); ``start_seq`` is in the generator's numbering.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, NamedTuple, Protocol, TypeGuard

from eventlog.jobs import Job


class Draft(NamedTuple):
    seq: int
    type: str
    data: dict[str, Any]


class Generator(Protocol):
    name: str

    def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        """Yield the job's events with seq >= start_seq, in seq order."""
        ...


class Inputs:
    """A stream's inputs as its generator reads them: in log order, each once. Those the
    log held when this generation (re)started are there at once; each later one as soon
    as the worker has queued its ``input`` event for writing (its transaction commits
    before, or with, any event the generator yields after reading it)."""

    def __init__(self, logged: Iterable[dict[str, Any]] = ()) -> None:
        self._unread: deque[dict[str, Any]] = deque(logged)
        self._arrived = asyncio.Event()
        #: How many the generator has read.
        self.read = 0

    def put(self, data: dict[str, Any]) -> None:
        """The worker: an input it queued for the log."""
        self._unread.append(data)
        self._arrived.set()

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next input not read yet, waiting up to ``timeout`` seconds for it; None
        when none came in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._unread:
            self._arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return None
        self.read += 1
        return self._unread.popleft()


class InteractiveGenerator(Protocol):
    """A generator that reads its stream's inputs (see the module's docstring)."""

    name: str
    takes_input: Literal[True]

    def events(self, job: Job, start_seq: int, inputs: Inputs) -> AsyncIterator[Draft]:
        """Yield the job's events with seq >= start_seq, in seq order; ``inputs``: the
        stream's inputs, from its first."""
        ...


def takes_input(generator: Generator | InteractiveGenerator,
                ) -> TypeGuard[InteractiveGenerator]:
    return getattr(generator, "takes_input", False) is True
