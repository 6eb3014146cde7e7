"""The generator protocol.

A generator turns a job into a stream's events, resumably: ``events(job, start_seq)``
yields exactly the events it would have yielded the first time, from ``start_seq``
on. A worker that takes over a stream resumes it from the last committed seq + 1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple, Protocol

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
