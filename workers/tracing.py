"""The worker's spans: one per job's generation, one per stream and committed transaction.

``tidemark.generate`` is the span of one job on this worker, from its start (the scan
of what the log already holds) to its terminal event's commit. Its parent is the span
that created the stream, whose context the job record's ``traceparent`` header carries
(``eventlog.jobs.Job.trace``); a worker that takes a job over reads the job record
again, so its span continues the same trace. It is the current span of the job's task,
so the task's log lines carry its ids.

``tidemark.transaction`` spans are its children: one per stream per Kafka transaction
that carried events of the stream (so their number is bounded by the transactions, not
the events), from the transaction's start to its commit. Every event record the
transaction writes carries that span's context in its ``traceparent`` header.

With tracing off nothing here creates a span: :func:`generation_span` yields None and
:func:`transaction_spans` None, so the outbox adds no header.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from eventlog import tracing
from eventlog.jobs import Job
from schemas.events import ERROR, Event

if TYPE_CHECKING:
    from workers.outbox import Entry

GENERATE: Final = "tidemark.generate"
TRANSACTION: Final = "tidemark.transaction"


@contextlib.contextmanager
def generation_span(job: Job, *, jobs_partition: int, jobs_offset: int,
                    ) -> Iterator[Span | None]:
    """The job's ``tidemark.generate`` span, current while the block runs (None: off)."""
    if not tracing.enabled():
        yield None
        return
    info = job.stream
    with tracing.tracer().start_as_current_span(
            GENERATE, context=tracing.kafka_context(job.trace), kind=SpanKind.CONSUMER,
            attributes={tracing.STREAM_ID: info.stream_id, tracing.TENANT: info.tenant,
                        tracing.GENERATOR: info.generator,
                        tracing.PARTITION: str(info.partition),
                        "tidemark.jobs.partition": jobs_partition,
                        "tidemark.jobs.offset": jobs_offset}) as span:
        yield span


def note_start(span: Span | None, *, start_seq: int) -> None:
    """Where the generation starts (above 1: a takeover, resuming the stream)."""
    if span is not None:
        span.set_attribute("tidemark.start_seq", start_seq)
        span.set_attribute("tidemark.resumed", start_seq > 1)


def note_end(span: Span | None, event: Event) -> None:
    """The stream's terminal event was committed."""
    if span is not None:
        span.set_attributes({"tidemark.outcome": event.type, "tidemark.last_seq": event.seq})
        if event.type == ERROR:
            span.set_status(Status(StatusCode.ERROR, str(event.data.get("code", "error"))))


class TransactionSpans:
    """The ``tidemark.transaction`` spans of one transaction (one per traced stream)."""

    def __init__(self) -> None:
        # id(generation span) -> (its transaction span, its headers, [first seq, last seq,
        # events])
        self._spans: dict[int, tuple[Span, tuple[tuple[str, bytes], ...], list[int]]] = {}

    def headers(self, entry: Entry) -> tuple[tuple[str, bytes], ...]:
        """The trace headers of an event entry's record (none if it is not traced)."""
        parent = entry.span
        if parent is None or entry.event is None:
            return tracing.NO_HEADERS
        got = self._spans.get(id(parent))
        seq = entry.event.seq
        if got is None:
            info = entry.info
            span = tracing.tracer().start_span(
                TRANSACTION, context=trace.set_span_in_context(parent),
                kind=SpanKind.PRODUCER, attributes={
                    tracing.STREAM_ID: entry.event.stream,
                    tracing.PARTITION: "" if info is None else str(info.partition)})
            got = self._spans[id(parent)] = (span, tracing.headers(span), [seq, seq, 0])
        got[2][1] = seq
        got[2][2] += 1
        return got[1]

    def close(self, failure: BaseException | None) -> None:
        for span, _, (first, last, count) in self._spans.values():
            span.set_attributes({"tidemark.seq.first": first, "tidemark.seq.last": last,
                                 "tidemark.events": count})
            if failure is not None:
                span.set_status(Status(StatusCode.ERROR, f"not committed: {failure!r}"))
            span.end()
        self._spans.clear()


@contextlib.contextmanager
def transaction_spans(batch: Sequence[Entry]) -> Iterator[TransactionSpans | None]:
    """The spans of the transaction that writes ``batch`` (None: nothing in it is
    traced); each ends when the block does, failed if it raised."""
    if not tracing.enabled() or not any(e.span is not None for e in batch):
        yield None
        return
    spans = TransactionSpans()
    try:
        yield spans
    except BaseException as exc:
        spans.close(exc)
        raise
    spans.close(None)
