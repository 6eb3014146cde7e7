"""Content processors: what a worker does to a stream's events between its generator
and the transactional outbox (docs/content.md).

A :class:`Processor` is loaded once per worker from the ``tidemark.processors`` entry
points (``workers.plugins``). For each stream whose tenant's policy names it, the worker
asks it for a :class:`ProcessorRun` (``open``), which turns each event the stream would
have into the events it has instead (``process``: none, the same, a changed one, more,
or a terminal ``error`` that ends the stream). The runs of a stream are chained in the
policy's order: the events one yields are the next one's input.

Resumable after a takeover. A run's state is plain JSON (``state()``), and it must be a
function of the events it was given: a run opened with the state it returned gives the
same events for the same input. Every event a :class:`Pipeline` writes carries, in its
``tm-proc`` header, where the pipeline was (:class:`Position`): the generator's seq of
the draft it came from, its index among that draft's outputs, and every run's state
*before* that draft, with the policy in force. A worker that takes the stream over
opens the runs from the last header in the log, asks the generator for that draft
again (generators are deterministic), and drops the outputs the log already holds: it
writes exactly the events the first owner would have written. Nothing is re-run from
the stream's start, and a policy changed meanwhile does not change a stream already
being processed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

import orjson

from eventlog.contentpolicy import Spec
from eventlog.jobs import Job
from schemas import events
from schemas.events import HEADER_PROC

log = logging.getLogger(__name__)

ACTIONS: Final = ("redact", "block", "flag")
__all__ = ["ACTIONS", "HEADER_PROC", "Output", "Pipeline", "Position", "Processor",
           "ProcessorRun", "ProcessorUnavailable", "Spec"]


class Output(NamedTuple):
    """An event a run yields: its type and data (the worker gives it its seq)."""

    type: str
    data: dict[str, Any]


class ProcessorRun(Protocol):
    """A processor's work on one stream."""

    def process(self, event: Output) -> list[Output]:
        """The events that stand for ``event`` in the stream, in order."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything :meth:`Processor.open` needs to go on from here (JSON)."""
        ...


class Processor(Protocol):
    """A content processor, as its entry point's factory returns it."""

    name: str

    def open(self, job: Job, spec: Spec, state: Mapping[str, Any] | None) -> ProcessorRun:
        """A run for ``job``'s stream under ``spec``; ``state``: a run's ``state()`` to
        go on from (None: the stream's start). Raises ``ValueError`` for a spec it
        cannot run (an unknown action or option)."""
        ...


class ProcessorUnavailable(LookupError):
    """A policy names a processor this worker has not loaded."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a pipeline was when it wrote an event (the ``tm-proc`` header)."""

    #: The generator's seq of the draft the event came from.
    src: int
    #: The event's index among that draft's outputs.
    part: int
    #: Each run's state before that draft, in the policy's order.
    states: tuple[dict[str, Any], ...]
    policy: tuple[Spec, ...]

    def encode(self) -> bytes:
        return orjson.dumps({"src": self.src, "part": self.part, "states": list(self.states),
                             "policy": [s.to_json() for s in self.policy]})

    @classmethod
    def decode(cls, raw: bytes) -> Position:
        obj = orjson.loads(raw)
        return cls(src=int(obj["src"]), part=int(obj["part"]),
                   states=tuple(obj["states"]),
                   policy=tuple(Spec.from_json(s) for s in obj["policy"]))


class Pipeline:
    """A stream's processor runs, chained; :meth:`feed` gives the events of one draft,
    each with its ``tm-proc`` header."""

    def __init__(self, job: Job, processors: Mapping[str, Processor],
                 policy: Sequence[Spec], states: Sequence[Mapping[str, Any] | None] = ()
                 ) -> None:
        self.policy = tuple(policy)
        missing = [s.processor for s in self.policy if s.processor not in processors]
        if missing:
            raise ProcessorUnavailable(f"no processor named {', '.join(map(repr, missing))}")
        given = list(states) or [None] * len(self.policy)
        self.runs = [processors[s.processor].open(job, s, st)
                     for s, st in zip(self.policy, given, strict=True)]
        self.ended = False

    @classmethod
    def resume(cls, job: Job, processors: Mapping[str, Processor], at: Position,
               ) -> Pipeline:
        """The pipeline as it was before draft ``at.src`` (a takeover)."""
        return cls(job, processors, at.policy, at.states)

    def feed(self, src: int, event: Output) -> list[tuple[Output, bytes]]:
        """The events that stand for the generator's draft ``src`` (``event``), each
        with its header; nothing once a terminal event came out."""
        if self.ended:
            return []
        before = tuple(run.state() for run in self.runs)
        batch = [event]
        for run in self.runs:
            batch = _upto_terminal([out for ev in batch for out in run.process(ev)])
        self.ended = any(events.is_terminal(ev.type) for ev in batch)
        return [(ev, Position(src=src, part=i, states=before, policy=self.policy).encode())
                for i, ev in enumerate(batch)]

    def fail(self, src: int, code: str, message: str, *, part: int = 0,
             ) -> list[tuple[Output, bytes]]:
        """A terminal ``error`` for draft ``src`` (a processor failed), as its output
        ``part``."""
        self.ended = True
        states = tuple(run.state() for run in self.runs)
        return [(Output(events.ERROR, {"code": code, "message": message, "retryable": False}),
                 Position(src=src, part=part, states=states, policy=self.policy).encode())]


def _upto_terminal(batch: list[Output]) -> list[Output]:
    """``batch`` up to its first terminal event (nothing follows one)."""
    for i, ev in enumerate(batch):
        if events.is_terminal(ev.type):
            return batch[:i + 1]
    return batch
